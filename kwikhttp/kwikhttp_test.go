package kwikhttp_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/kwikhttp"
)

// pathBytes is what the client's session received on each path, the primary first.
func pathBytes(t *testing.T, c *cluster) []uint64 {
	t.Helper()
	sess := c.tr.Session(c.addr)
	if sess == nil {
		t.Fatal("no session to the primary")
	}
	var out []uint64
	for _, p := range sess.Stats().Paths {
		out = append(out, p.BytesReceived)
	}
	return out
}

// http.FileServer on a primary and two secondaries, each with its own copy of the files; an
// http.Client through kwikhttp.Transport: a 64 MiB download arrives intact with bytes from
// every server (which join at that first large response, not at the small one before), a
// Range request gets its bytes (fanned out too), a missing file is a 404,
// redirects are followed, a streamed response of unknown length comes from the primary
// alone, and request bodies (sized and chunked) reach the primary's handler.
func TestFileServer(t *testing.T) {
	ctx := testContext(t)
	const size = 64 << 20
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var dirs [3]string
	var want []byte
	for i := range dirs {
		dirs[i] = t.TempDir()
		want = writeFile(t, dirs[i], "big.bin", size, 1, mtime)
		writeFile(t, dirs[i], "small.bin", 1000, 2, mtime)
	}
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(dirs[0])))
	mux.Handle("/old", http.RedirectHandler("/small.bin", http.StatusMovedPermanently))
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		for i := range 64 {
			w.Write(bytes.Repeat([]byte{byte(i)}, 32<<10))
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
	c := newCluster(t, mux, []http.Handler{http.FileServer(http.Dir(dirs[1])), http.FileServer(http.Dir(dirs[2]))}, nil)

	t.Run("SmallJoinsNoSecondary", func(t *testing.T) {
		resp, body := c.get(t, ctx, "/small.bin", nil)
		if resp.StatusCode != http.StatusOK || len(body) != 1000 {
			t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
		}
		if paths := pathBytes(t, c); len(paths) != 1 {
			t.Fatalf("%d paths after a small response: the secondaries join at the first large one", len(paths))
		}
	})
	t.Run("64MiB", func(t *testing.T) {
		resp, body := c.get(t, ctx, "/big.bin", nil)
		if resp.StatusCode != http.StatusOK || resp.ContentLength != size {
			t.Fatalf("status %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
		}
		if sum(body) != sum(want) {
			t.Fatal("the body differs from the file")
		}
		paths := pathBytes(t, c)
		if len(paths) != 3 || paths[0] == 0 || paths[1] == 0 || paths[2] == 0 {
			t.Fatalf("bytes received per path %v: want three paths that each brought some", paths)
		}
		res := c.lastFanout()
		if res == nil || len(res.Bytes) != 3 {
			t.Fatalf("fan-out: %+v, want the primary and both secondaries", res)
		}
		t.Logf("bytes per path %v; fan-out %v, refilled %d", paths, res.Bytes, res.Refilled)
	})
	t.Run("Range", func(t *testing.T) {
		before := c.fanoutCount()
		for _, rng := range []struct{ from, to int64 }{{1000, 1999}, {3 << 20, 8<<20 - 1}} {
			resp, body := c.get(t, ctx, "/big.bin", http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", rng.from, rng.to)}})
			if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want[rng.from:rng.to+1]) {
				t.Fatalf("Range %v: status %d, %d bytes", rng, resp.StatusCode, len(body))
			}
			if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", rng.from, rng.to, size) {
				t.Fatalf("Content-Range %q", cr)
			}
		}
		if n := c.fanoutCount() - before; n != 1 {
			t.Errorf("%d fan-outs, want one (the large range)", n)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		resp, _ := c.get(t, ctx, "/missing.bin", nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("Redirect", func(t *testing.T) {
		resp, body := c.get(t, ctx, "/old", nil)
		if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/small.bin" || len(body) != 1000 {
			t.Fatalf("status %d at %s, %d bytes", resp.StatusCode, resp.Request.URL, len(body))
		}
	})
	t.Run("StreamFromPrimaryAlone", func(t *testing.T) {
		before := pathBytes(t, c)
		resp, body := c.get(t, ctx, "/stream", nil)
		if resp.StatusCode != http.StatusOK || resp.ContentLength != -1 || len(body) != 64*32<<10 {
			t.Fatalf("status %d, Content-Length %d, %d bytes", resp.StatusCode, resp.ContentLength, len(body))
		}
		for i := range 64 {
			if body[i*32<<10] != byte(i) || body[(i+1)*32<<10-1] != byte(i) {
				t.Fatalf("chunk %d differs", i)
			}
		}
		after := pathBytes(t, c)
		if after[1] != before[1] || after[2] != before[2] || after[0] <= before[0] {
			t.Fatalf("bytes per path went from %v to %v: want the primary's only", before, after)
		}
	})
	t.Run("ConcurrentAndHead", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		for i := range 40 {
			wg.Go(func() {
				method := http.MethodGet
				if i%2 == 1 {
					method = http.MethodHead
				}
				req, _ := http.NewRequestWithContext(ctx, method, c.base+"/small.bin", nil)
				resp, err := c.client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if want := map[string]int{http.MethodGet: 1000, http.MethodHead: 0}[method]; err != nil || len(body) != want || resp.ContentLength != 1000 {
					errs <- fmt.Errorf("%s: %d bytes, Content-Length %d, %v", method, len(body), resp.ContentLength, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("Redial", func(t *testing.T) {
		old := c.tr.Session(c.addr)
		old.Close()
		resp, body := c.get(t, ctx, "/small.bin", nil)
		if resp.StatusCode != http.StatusOK || len(body) != 1000 {
			t.Fatalf("after the session closed: status %d, %d bytes", resp.StatusCode, len(body))
		}
		if now := c.tr.Session(c.addr); now == nil || now == old {
			t.Fatal("no new session")
		}
	})
	t.Run("Upload", func(t *testing.T) {
		payload := want[:5<<20]
		for _, sized := range []bool{true, false} {
			var body io.Reader = bytes.NewReader(payload)
			if !sized {
				body = io.MultiReader(body) // no length: sent chunked
			}
			resp, err := c.client.Post(c.base+"/upload", "application/octet-stream", body)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if wantAnswer := fmt.Sprintf("%d %x", len(payload), sum(payload)); err != nil || string(got) != wantAnswer {
				t.Fatalf("sized %v: %q, %v; want %q", sized, got, err, wantAnswer)
			}
		}
	})
}

// A replica whose file differs (other bytes, other modification time) serves nothing of it:
// the primary sends its bytes itself, and the body is intact.
func TestReplicaDiffers(t *testing.T) {
	ctx := testContext(t)
	const size = 8 << 20
	good, stale := t.TempDir(), t.TempDir()
	want := writeFile(t, good, "f.bin", size, 3, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	writeFile(t, stale, "f.bin", size, 4, time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	c := newCluster(t, http.FileServer(http.Dir(good)), []http.Handler{http.FileServer(http.Dir(stale))}, func(s *kwikhttp.Server) {
		s.Fanout = &kwik.FanoutOptions{ChunkSize: 256 << 10} // the secondary gets pieces, whatever its speed
	})
	resp, body := c.get(t, ctx, "/f.bin", nil)
	if resp.StatusCode != http.StatusOK || sum(body) != sum(want) {
		t.Fatalf("status %d, body intact: %v", resp.StatusCode, sum(body) == sum(want))
	}
	res := c.lastFanout()
	if res == nil || res.Refilled == 0 || len(res.Failed) == 0 {
		t.Fatalf("fan-out %+v: want the stale replica's pieces refilled by the primary", res)
	}
	for path, n := range res.Bytes {
		if path != "" && n != 0 {
			t.Errorf("the stale replica on path %s delivered %d bytes", path, n)
		}
	}
}

// A secondary that dies while it serves a range: the primary refills the range, the body is
// intact.
func TestSecondaryKilled(t *testing.T) {
	ctx := testContext(t)
	const size = 8 << 20
	dir := t.TempDir()
	want := writeFile(t, dir, "f.bin", size, 5, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	started := make(chan struct{})
	var once sync.Once
	dying := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(started) })
		<-r.Context().Done() // until the server is gone
	})
	fs := http.FileServer(http.Dir(dir))
	c := newCluster(t, fs, []http.Handler{fs, dying}, func(s *kwikhttp.Server) {
		s.Fanout = &kwik.FanoutOptions{ChunkSize: 256 << 10}
	})
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		select {
		case <-started:
			c.secondaries[1].Close()
		case <-ctx.Done():
		}
	}()
	resp, body := c.get(t, ctx, "/f.bin", nil)
	<-killed
	if resp.StatusCode != http.StatusOK || sum(body) != sum(want) {
		t.Fatalf("status %d, body intact: %v", resp.StatusCode, sum(body) == sum(want))
	}
	if res := c.lastFanout(); res == nil || res.Refilled == 0 {
		t.Fatalf("fan-out %+v: want the dead secondary's range refilled", res)
	}
}

// A replica that claims the primary's validators (same size, same modification time) and
// sends other bytes is caught by the digests of the delegated ranges (kwik.Fanout's
// default): its pieces fail with KWIK_DIGEST_MISMATCH, the primary refills them, and the
// body arrives intact, its Repr-Digest checked too.
func TestLyingReplicaCaughtByRangeDigests(t *testing.T) {
	ctx := testContext(t)
	const size = 4 << 20
	modtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	good := make([]byte, size)
	for i := range good {
		good[i] = byte(i * 7 / 5)
	}
	bad := bytes.Repeat([]byte{'x'}, size)
	digest := sha256.Sum256(good)
	serve := func(content []byte) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Repr-Digest", kwikhttp.SHA256Field(digest[:]))
			kwikhttp.ServeContent(w, r, "f.bin", modtime, bytes.NewReader(content), size)
		})
	}
	c := newCluster(t, serve(good), []http.Handler{serve(bad)}, func(s *kwikhttp.Server) {
		s.Fanout = &kwik.FanoutOptions{ChunkSize: 256 << 10}
	})
	resp, body := c.get(t, ctx, "/f.bin", nil)
	if resp.StatusCode != http.StatusOK || sum(body) != sum(good) {
		t.Fatalf("status %d, body intact: %v", resp.StatusCode, sum(body) == sum(good))
	}
	res := c.lastFanout()
	if res == nil || res.Refilled == 0 || len(res.Failed) == 0 {
		t.Fatalf("fan-out %+v: want the lying replica's pieces refilled", res)
	}
	for _, de := range res.Failed {
		if !errors.Is(de, kwik.ErrDigestMismatch) {
			t.Errorf("failure %v, want a digest mismatch", de)
		}
	}
}

// A primary whose own Repr-Digest is not its body's (its file changed, say): the body's last
// Read fails with ErrDigestMismatch instead of returning io.EOF, whoever sent the bytes.
func TestPrimaryDigestMismatch(t *testing.T) {
	const size = 4 << 20
	modtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	content := make([]byte, size)
	other := sha256.Sum256([]byte("another file"))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Repr-Digest", kwikhttp.SHA256Field(other[:]))
		kwikhttp.ServeContent(w, r, "f.bin", modtime, bytes.NewReader(content), size)
	})
	c := newCluster(t, h, []http.Handler{h}, func(s *kwikhttp.Server) {
		s.Fanout = &kwik.FanoutOptions{ChunkSize: 256 << 10}
	})
	resp, err := c.client.Get(c.base + "/f.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); !errors.Is(err, kwikhttp.ErrDigestMismatch) {
		t.Fatalf("reading the body: %v, want ErrDigestMismatch", err)
	}
}

// Contexts and Content-Length: canceling a request's context ends the exchange on both sides
// (the handler's context ends too); a body shorter than its Content-Length is an error, not a
// short read; a handler that panics leaves the client with an error.
func TestCancelAndTruncation(t *testing.T) {
	ctx := testContext(t)
	started, handlerDone := make(chan struct{}), make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/wait", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("first bytes"))
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
		handlerDone <- r.Context().Err()
	})
	mux.HandleFunc("/short", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write(make([]byte, 50))
	})
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 10000))
		panic(http.ErrAbortHandler)
	})
	c := newCluster(t, mux, nil, nil)

	rctx, cancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, c.base+"/wait", nil)
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
		t.Errorf("reading after cancel: %v, want context.Canceled", err)
	}
	resp.Body.Close()
	if err := <-handlerDone; err == nil {
		t.Error("the handler's context did not end")
	}

	// The stream is reset: the client sees it in RoundTrip or in the body's Read, never a
	// short body that ends cleanly.
	resp, err = c.client.Get(c.base + "/short")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("a body of 50 bytes for a Content-Length of 100 read without error")
	}

	resp, err = c.client.Get(c.base + "/panic")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("a panicking handler's response read without error")
	}
}

// Bad input to the server gets a clear answer; bad URLs get clear errors from the Transport.
func TestBadInput(t *testing.T) {
	ctx := testContext(t)
	c := newCluster(t, http.NotFoundHandler(), nil, nil)
	// A request head that is not HTTP, straight on a stream.
	sess, err := kwik.Dial(ctx, c.addr, clientTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for _, head := range []string{"garbage\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 70<<10) + "\r\n\r\n"} {
		st, err := sess.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(st, head)
		st.Close()
		answer, _ := io.ReadAll(st)
		if !strings.HasPrefix(string(answer), "HTTP/1.1 4") {
			t.Errorf("answer to %.20q...: %q", head, answer)
		}
	}
	for _, url := range []string{"http://" + c.addr + "/", "ftp://x/", "https:///nohost"} {
		if _, err := c.client.Get(url); err == nil {
			t.Errorf("GET %s: no error", url)
		}
	}
	// A refused dial is an error, not a hang.
	tr := &kwikhttp.Transport{TLSClientConfig: clientTLS, Config: &kwik.Config{QUIC: &quic.Config{HandshakeIdleTimeout: 300 * time.Millisecond}}}
	defer tr.Close()
	if _, err := (&http.Client{Transport: tr}).Get("https://127.0.0.1:1/"); err == nil {
		t.Error("GET from a closed port: no error")
	}
}

// The session's first large response does not wait for its secondaries to join: one of them
// cannot join (the client's AllowPath holds its join until the test ends), and the pieces
// delegated to it, which the client holds, the primary sends again: the body arrives, intact,
// and the fan-out ends (the client reports the held pieces complete once its reader has read
// everything), while the primary still waits for that join (it has not logged the secondary
// as not added).
func TestFirstResponseDoesNotWaitForJoins(t *testing.T) {
	ctx := testContext(t)
	const size = 8 << 20
	dir := t.TempDir()
	want := writeFile(t, dir, "f.bin", size, 9, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	hole, err := net.ListenPacket("udp", "127.0.0.1:0") // answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	release := make(chan struct{})
	defer close(release)
	logs := &syncBuffer{}
	fs := http.FileServer(http.Dir(dir))
	c := newCluster(t, fs, []http.Handler{fs}, func(s *kwikhttp.Server) {
		s.Secondaries = append(s.Secondaries, hole.LocalAddr().String())
		s.JoinTimeout = time.Hour
		s.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	c.tr.Config = &kwik.Config{AllowPath: func(addr string) error {
		if addr == hole.LocalAddr().String() {
			<-release
		}
		return nil
	}}
	resp, body := c.get(t, ctx, "/f.bin", nil)
	if resp.StatusCode != http.StatusOK || sum(body) != sum(want) {
		t.Fatalf("status %d, body intact: %v", resp.StatusCode, sum(body) == sum(want))
	}
	c.waitFanouts(t, ctx, 1)
	if strings.Contains(logs.String(), "secondary not added") {
		t.Fatalf("the body waited for the join to fail:\n%s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use (a logger's output).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// A secondary that refuses the join (its join key is another) is given pieces of the
// session's first large response while the client joins it: the client refuses them when the
// join fails (KWIK_PATH_DEAD), and the primary sends them itself. The body arrives intact, the fan-out ends, the
// other secondary serves its share, and the client lists the refusing one's path as dead,
// having received nothing on it.
func TestJoinRefused(t *testing.T) {
	ctx := testContext(t)
	const size = 8 << 20
	dir := t.TempDir()
	want := writeFile(t, dir, "f.bin", size, 11, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	fs := http.FileServer(http.Dir(dir))
	other := bytes.Repeat([]byte{7}, 32) // not the cluster's join key
	ln, err := kwik.Listen("127.0.0.1:0", serverTLS, &kwik.Config{JoinKey: other, ListenerRole: kwik.ListenSecondary})
	if err != nil {
		t.Fatal(err)
	}
	var serving sync.WaitGroup
	t.Cleanup(serving.Wait)
	refusing := &kwikhttp.Server{Handler: fs}
	t.Cleanup(func() { refusing.Close(); closeListener(ln) })
	serving.Go(func() { refusing.Serve(ln) })
	c := newCluster(t, fs, []http.Handler{fs}, func(s *kwikhttp.Server) {
		s.Secondaries = append(s.Secondaries, ln.Addr().String())
	})
	resp, body := c.get(t, ctx, "/f.bin", nil)
	if resp.StatusCode != http.StatusOK || sum(body) != sum(want) {
		t.Fatalf("status %d, body intact: %v", resp.StatusCode, sum(body) == sum(want))
	}
	c.waitFanouts(t, ctx, 1)
	var served, refused bool
	for _, p := range c.tr.Session(c.addr).Stats().Paths {
		switch {
		case p.IsPrimary:
		case p.Address == ln.Addr().String():
			refused = p.Status == kwik.PathDead && p.BytesReceived == 0
		default:
			served = p.BytesReceived > 0
		}
	}
	if !served || !refused {
		t.Fatalf("the joined secondary served: %v; the refusing one is dead with nothing received: %v", served, refused)
	}
	// The primary delegated to it at once (its join takes two handshakes): those pieces failed
	// with the join, and the primary sent them itself.
	if r := c.lastFanout(); len(r.Failed) == 0 || r.Refilled == 0 {
		t.Fatalf("%d delegations failed, %d bytes refilled: none delegated while joining", len(r.Failed), r.Refilled)
	}
	for _, de := range c.lastFanout().Failed {
		if !errors.Is(de, kwik.ErrPathDead) {
			t.Errorf("a delegation failed with %v, want KWIK_PATH_DEAD", de)
		}
	}
}
