// Command kwik runs KWIK: `kwik demo` shows one client downloading one stream from a primary
// and its secondaries at once, on loopback, each server behind its own emulated link;
// `kwik serve` and `kwik get` serve and download files across real hosts.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "kwik",
		Short:         "KWIK: one stream from several servers at once, over QUIC",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(demoCommand())
	root.AddCommand(benchCommand())
	root.AddCommand(serveCommand(), getCommand())
	// An interrupt cancels the command's context: servers stop, downloads end cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kwik:", err)
		os.Exit(1)
	}
}
