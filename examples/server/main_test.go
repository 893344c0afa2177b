package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/kwik-go/kwik/examples/client/fetch"
	"github.com/kwik-go/kwik/internal/leakcheck"
)

// TestMain fails the run if a test leaves a goroutine behind.
func TestMain(m *testing.M) { leakcheck.Main(m) }

// TestServerAndClient runs the example server (a primary, a secondary that answers prepare
// messages and one that stays silent) and the example client's fetch over UDP on loopback.
func TestServerAndClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const size = 4 << 20
	certFile := filepath.Join(t.TempDir(), "cert.pem")
	s, err := newServer(options{
		addr:          "127.0.0.1:0",
		secondaries:   2,
		secondaryHost: "127.0.0.1",
		silent:        1,
		certFile:      certFile,
		largeSize:     size,
		readyTimeout:  time.Second,
		log:           slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- s.serve(serveCtx) }()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	tlsConf, err := fetch.TLSConfig(certFile)
	if err != nil {
		t.Fatal(err)
	}
	res, err := fetch.Get(ctx, s.Addr(), tlsConf, "large.bin", nil)
	if err != nil {
		t.Fatal(err) // Get checks the size and digest against the primary's header
	}
	// The header's digest must be the object's, not merely consistent with what arrived.
	want := sha256.Sum256(generate(spec{Size: size, Seed: 2}))
	if res.Header.Size != size || res.Header.SHA256 != hex.EncodeToString(want[:]) {
		t.Fatalf("header %+v, want %d bytes, sha256 %x", res.Header, size, want)
	}

	received := make(map[string]uint64) // by address
	for _, p := range res.Stats.Paths {
		t.Logf("path %s %s primary=%v %v: %d bytes", p.PathID, p.Address, p.IsPrimary, p.Status, p.BytesReceived)
		if !p.IsPrimary {
			received[p.Address] = p.BytesReceived
		}
	}
	ready, silent := s.secondaries[0], s.secondaries[1]
	if _, ok := received[ready.addr]; !ok {
		t.Fatalf("the client has no path to secondary %s", ready.addr)
	}
	if received[ready.addr] == 0 {
		t.Errorf("the ready secondary %s delivered nothing", ready.addr)
	}
	if received[silent.addr] != 0 {
		t.Errorf("the silent secondary %s delivered %d bytes: it was never ready", silent.addr, received[silent.addr])
	}

	// An unknown object is refused, and the server goes on.
	_, err = fetch.Get(ctx, s.Addr(), tlsConf, "missing.bin", nil)
	if refused := (*fetch.RefusedError)(nil); !errors.As(err, &refused) {
		t.Errorf("fetching an unknown object: %v, want a *fetch.RefusedError", err)
	}
}
