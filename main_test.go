package kwik

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/leakcheck"
	"github.com/kwik-go/kwik/internal/selfsigned"
)

// TestMain fails the run if a test leaves a goroutine behind: every goroutine a session or
// listener starts must end when it closes.
func TestMain(m *testing.M) { leakcheck.Main(m) }

var testTLS = newTestTLS()

type tlsPair struct{ server, client *tls.Config }

func newTestTLS() tlsPair {
	server, client, err := selfsigned.New()
	if err != nil {
		panic(err)
	}
	return tlsPair{server: server, client: client}
}

// testContext returns a context that ends with the test, bounded so a hung test fails.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// pair is a client session and the primary's side of it, over real UDP on loopback.
type pair struct {
	ln             *Listener
	client, server *session
}

func newPair(t testing.TB, clientConf, serverConf *Config) *pair {
	t.Helper()
	ln, err := Listen("127.0.0.1:0", testTLS.server, serverConf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeListener(ln) })
	ctx := testContext(t)
	type res struct {
		s   Session
		err error
	}
	accepted := make(chan res, 1)
	go func() {
		s, err := ln.Accept(ctx)
		accepted <- res{s, err}
	}()
	c, err := Dial(ctx, ln.Addr().String(), testTLS.client, clientConf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := <-accepted
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.s.Close() })
	return &pair{ln: ln, client: c.(*session), server: r.s.(*session)}
}
