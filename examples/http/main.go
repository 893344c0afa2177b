// Command http serves a directory with http.FileServer from a KWIK primary and two
// secondaries, and downloads a file from them with an ordinary http.Client whose transport is
// kwikhttp's: the same net/http code on both sides, with the body arriving from three servers
// at once.
//
//	go run ./examples/http                 # generates a 64 MiB file in a temporary directory
//	go run ./examples/http -dir ~/files -file big.iso
//
// Everything runs in one process on loopback: each server is a kwik.Listener with a
// kwikhttp.Server in front of the same http.FileServer(http.Dir(dir)) (replicas share the
// directory here; on separate hosts each would have its own copy, same bytes and modification
// times, or ETags of its own making that match).
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/internal/selfsigned"
	"github.com/kwik-go/kwik/kwikhttp"
)

func main() {
	dir := flag.String("dir", "", "directory to serve (default: a temporary one with a generated file)")
	file := flag.String("file", "large.bin", "file to download")
	sizeMiB := flag.Int64("size", 64, "size of the generated file in MiB")
	flag.Parse()
	if err := run(context.Background(), *dir, *file, *sizeMiB<<20, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "http:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir, file string, size int64, out io.Writer) error {
	if dir == "" {
		tmp, err := os.MkdirTemp("", "kwik-http-example")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
		f, err := os.Create(filepath.Join(dir, file))
		if err != nil {
			return err
		}
		_, err = io.CopyN(f, rand.Reader, size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	serverTLS, clientTLS, err := selfsigned.New()
	if err != nil {
		return err
	}
	key := make([]byte, 32) // the primary and its secondaries share it
	rand.Read(key)
	files := http.FileServer(http.Dir(dir))

	// Two secondaries, then the primary that names them.
	var secondaries []string
	for range 2 {
		ln, err := kwik.Listen("127.0.0.1:0", serverTLS, &kwik.Config{JoinKey: key, ListenerRole: kwik.ListenSecondary})
		if err != nil {
			return err
		}
		srv := &kwikhttp.Server{Handler: files}
		go srv.Serve(ln)
		defer srv.Close()
		secondaries = append(secondaries, ln.Addr().String())
	}
	ln, err := kwik.Listen("127.0.0.1:0", serverTLS, &kwik.Config{JoinKey: key, ListenerRole: kwik.ListenPrimary})
	if err != nil {
		return err
	}
	primary := &kwikhttp.Server{Handler: files, Secondaries: secondaries}
	go primary.Serve(ln)
	defer primary.Close()
	fmt.Fprintf(out, "primary %s, secondaries %v, serving %s\n", ln.Addr(), secondaries, dir)

	// The client: http.Get-style code, with kwikhttp's transport.
	tr := &kwikhttp.Transport{TLSClientConfig: clientTLS}
	defer tr.Close()
	client := &http.Client{Transport: tr}
	start := time.Now()
	resp, err := client.Get("https://" + ln.Addr().String() + "/" + file)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", file, resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	fmt.Fprintf(out, "%s: %d bytes in %v (%.0f Mbit/s), sha256 %x\n", file, n, elapsed.Round(time.Millisecond),
		float64(n)*8/elapsed.Seconds()/1e6, h.Sum(nil)[:8])
	for _, p := range tr.Session(ln.Addr().String()).Stats().Paths {
		role := "secondary"
		if p.IsPrimary {
			role = "primary"
		}
		fmt.Fprintf(out, "  %-9s %-16s %6.1f MiB\n", role, p.Address, float64(p.BytesReceived)/(1<<20))
	}
	return nil
}
