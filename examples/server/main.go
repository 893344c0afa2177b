// Command server is a KWIK primary and its secondaries in one process, serving generated
// objects to examples/client from all of them at once, with the secondaries orchestrated by
// raw data.
//
// When a client session reaches the primary, the primary has the client join every secondary
// (Session.AddPath). For each request it then sends every secondary a "prepare" message
// through the client (kwik.SendOrder: raw data the client can neither read nor forge) naming
// the object and how to generate it; each secondary generates its copy and answers "ready"
// with its SHA-256 digest, back to the primary's path. The primary sends the client the object's size and digest, then the object
// with kwik.Fanout, delegating ranges only to the secondaries that answered ready with the
// right digest within -ready-timeout. With -silent N, the last N secondaries never answer, to
// show the primary serving without them.
//
// Run the server, then the client, from the module root:
//
//	go run ./examples/server
//	go run ./examples/client
//
// The server writes its self-signed certificate to -cert (by default in os.TempDir()), where
// the client reads it. The secondaries listen on -secondary-host, on ports the system picks;
// the client learns their addresses from the primary. Interrupt the server to stop it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	var o options
	var sizeMiB int64
	flag.StringVar(&o.addr, "addr", "localhost:4242", "the primary's UDP address")
	flag.IntVar(&o.secondaries, "secondaries", 2, "number of secondary servers")
	flag.StringVar(&o.secondaryHost, "secondary-host", "127.0.0.1", "host the secondaries listen on, and the client dials")
	flag.IntVar(&o.silent, "silent", 0, "the last N secondaries ignore prepare messages")
	flag.StringVar(&o.certFile, "cert", filepath.Join(os.TempDir(), "kwik-example-cert.pem"), "where to write the certificate (PEM) the client trusts")
	flag.Int64Var(&sizeMiB, "size", 32, "size of large.bin in MiB")
	flag.DurationVar(&o.readyTimeout, "ready-timeout", 2*time.Second, "how long the primary waits for the secondaries to be ready")
	flag.BoolVar(&o.kwikLog, "v", false, "log KWIK's own events too")
	flag.Parse()
	o.largeSize = sizeMiB << 20
	o.log = slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := newServer(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
	fmt.Printf("primary on %s, %d secondaries:", s.Addr(), len(s.secondaries))
	for _, sec := range s.secondaries {
		fmt.Printf(" %s", sec.addr)
	}
	fmt.Printf("\ncertificate in %s\nnow run: go run ./examples/client -addr %s -cert %s\n", o.certFile, o.addr, o.certFile)
	if err := s.serve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}
