// Command kwik runs KWIK: `kwik demo` shows one client downloading one stream from a primary
// and its secondaries at once, on loopback, each server behind its own emulated link.
package main

import (
	"fmt"
	"os"

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
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "kwik:", err)
		os.Exit(1)
	}
}
