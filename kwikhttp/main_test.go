package kwikhttp_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/internal/leakcheck"
	"github.com/kwik-go/kwik/internal/selfsigned"
	"github.com/kwik-go/kwik/kwikhttp"
)

// TestMain fails the run if a test leaves a goroutine behind.
func TestMain(m *testing.M) { leakcheck.Main(m) }

var serverTLS, clientTLS = func() (*tls.Config, *tls.Config) {
	s, c, err := selfsigned.New()
	if err != nil {
		panic(err)
	}
	return s, c
}()

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// cluster is a primary and its secondaries, each a kwikhttp.Server on a listener of its own
// on loopback, and a client whose http.Client goes through a kwikhttp.Transport.
type cluster struct {
	primary     *kwikhttp.Server
	secondaries []*kwikhttp.Server
	tr          *kwikhttp.Transport
	client      *http.Client
	addr        string // the primary's
	base        string // https://addr

	mu      sync.Mutex
	fanouts []*kwik.FanoutResult
	fanned  chan struct{} // closed, and replaced, at each response fanned out
}

// newCluster starts a primary serving primary and a secondary serving each of secondaries,
// which the primary adds to its clients' sessions; configure, if not nil, changes the
// primary's Server before it serves.
func newCluster(t *testing.T, primary http.Handler, secondaries []http.Handler, configure func(*kwikhttp.Server)) *cluster {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	c := &cluster{fanned: make(chan struct{})}
	var serving sync.WaitGroup
	t.Cleanup(serving.Wait) // runs last: the servers' Close ends Serve
	serve := func(role kwik.ListenerRole, h http.Handler) (*kwikhttp.Server, string) {
		ln, err := kwik.Listen("127.0.0.1:0", serverTLS, &kwik.Config{JoinKey: key, ListenerRole: role})
		if err != nil {
			t.Fatal(err)
		}
		srv := &kwikhttp.Server{Handler: h}
		t.Cleanup(func() { srv.Close(); closeListener(ln) })
		serving.Go(func() { srv.Serve(ln) })
		return srv, ln.Addr().String()
	}
	var addrs []string
	for _, h := range secondaries {
		srv, addr := serve(kwik.ListenSecondary, h)
		c.secondaries = append(c.secondaries, srv)
		addrs = append(addrs, addr)
	}
	ln, err := kwik.Listen("127.0.0.1:0", serverTLS, &kwik.Config{JoinKey: key, ListenerRole: kwik.ListenPrimary})
	if err != nil {
		t.Fatal(err)
	}
	c.primary = &kwikhttp.Server{Handler: primary, Secondaries: addrs, OnFanout: func(_ *http.Request, res *kwik.FanoutResult, err error) {
		if err == nil {
			c.mu.Lock()
			c.fanouts = append(c.fanouts, res)
			close(c.fanned)
			c.fanned = make(chan struct{})
			c.mu.Unlock()
		}
	}}
	if configure != nil {
		configure(c.primary)
	}
	t.Cleanup(func() { c.primary.Close(); closeListener(ln) })
	serving.Go(func() { c.primary.Serve(ln) })
	c.addr = ln.Addr().String()
	c.base = "https://" + c.addr
	c.tr = &kwikhttp.Transport{TLSClientConfig: clientTLS}
	t.Cleanup(func() { c.tr.Close() })
	c.client = &http.Client{Transport: c.tr}
	return c
}

// closeListener closes ln and the sessions still in its accept queue.
func closeListener(ln *kwik.Listener) {
	ln.Close()
	for {
		s, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		s.Close()
	}
}

// lastFanout is the last fanned-out response's result, or nil.
func (c *cluster) lastFanout() *kwik.FanoutResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.fanouts) == 0 {
		return nil
	}
	return c.fanouts[len(c.fanouts)-1]
}

// waitFanouts waits until n responses have been fanned out (Fanout returns once every
// delegation is resolved, which may follow the body's last byte).
func (c *cluster) waitFanouts(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	for {
		c.mu.Lock()
		got, fanned := len(c.fanouts), c.fanned
		c.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-fanned:
		case <-ctx.Done():
			t.Fatalf("%d responses fanned out, want %d", got, n)
		}
	}
}

// fanoutCount is the number of responses fanned out so far.
func (c *cluster) fanoutCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.fanouts)
}

// writeFile writes size pseudo-random bytes of seed to dir/name, with modification time
// mtime, and returns them.
func writeFile(t *testing.T, dir, name string, size int64, seed byte, mtime time.Time) []byte {
	t.Helper()
	b := make([]byte, size)
	mrand.NewChaCha8([32]byte{seed}).Read(b)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return b
}

// get fetches url with c's client and returns the response and its whole body.
func (c *cluster) get(t *testing.T, ctx context.Context, url string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp, body
}

func sum(b []byte) [32]byte { return sha256.Sum256(b) }
