package kwik

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/selfsigned"
	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: every goroutine a session or
// listener starts must end when it closes. quic-go keeps a closed connection around for a few
// probe timeouts to answer retransmissions, which after a blackholed path can take seconds;
// a leak is what is still there after that.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(20 * time.Second)
		err := goleak.Find()
		for err != nil && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			err = goleak.Find()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left after the run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

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
	t.Cleanup(func() { ln.Close() })
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
