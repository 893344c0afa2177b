// Command client downloads one object from the KWIK example server (examples/server): it
// dials only the primary, asks for the object on one stream and reads it to the end, while
// the primary has its secondaries send parts of that same stream. It checks the bytes against
// the SHA-256 digest the primary sent first and prints what each path carried.
//
// Run the server, then the client, from the module root:
//
//	go run ./examples/server
//	go run ./examples/client
//
// The server writes its self-signed certificate to a PEM file (by default in os.TempDir());
// -cert must name the same file here. -object names the object; the server refuses an unknown one and lists those it has.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/kwik-go/kwik/examples/client/fetch"
)

func main() {
	addr := flag.String("addr", "localhost:4242", "the primary's UDP address")
	cert := flag.String("cert", filepath.Join(os.TempDir(), "kwik-example-cert.pem"), "PEM file of the certificate to trust (the server writes it)")
	object := flag.String("object", "large.bin", "object to download")
	timeout := flag.Duration("timeout", time.Minute, "give up after this long")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, os.Stdout, *addr, *cert, *object); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

// run downloads object from the primary at addr, trusting the certificate in certFile, and
// reports to w.
func run(ctx context.Context, w io.Writer, addr, certFile, object string) error {
	tlsConf, err := fetch.TLSConfig(certFile)
	if err != nil {
		return err
	}
	res, err := fetch.Get(ctx, addr, tlsConf, object, nil) // nil: the defaults, windows that tune themselves
	if res != nil {
		report(w, res)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "intact: %d bytes, sha256 %s\n", res.Header.Size, res.Header.SHA256)
	return nil
}

// report prints the transfer and what each path carried.
func report(w io.Writer, res *fetch.Result) {
	fmt.Fprintf(w, "%s: header after %v (the primary preparing its secondaries), then %.1f MiB in %v (%.1f Mbit/s)\n",
		res.Header.Object, res.Wait.Round(time.Millisecond), float64(res.Header.Size)/(1<<20),
		res.Elapsed.Round(time.Millisecond), float64(res.Header.Size)*8/res.Elapsed.Seconds()/1e6)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\taddress\trole\tstatus\treceived\tshare\t")
	for _, p := range res.Stats.Paths {
		role := "secondary"
		if p.IsPrimary {
			role = "primary"
		}
		share := 0.0
		if res.Stats.BytesReceived > 0 {
			share = 100 * float64(p.BytesReceived) / float64(res.Stats.BytesReceived)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%.2f MiB\t%.1f%%\t\n", p.PathID, p.Address, role, p.Status,
			float64(p.BytesReceived)/(1<<20), share)
	}
	tw.Flush()
}
