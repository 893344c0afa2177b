package kwik

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// pattern fills b with bytes that depend on seed and position, so misplaced bytes show.
func pattern(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
}

func TestHandshake(t *testing.T) {
	p := newPair(t, nil, nil)
	if p.client.ID() != p.server.ID() || len(p.client.ID()) != 32 {
		t.Fatalf("session IDs: client %q server %q", p.client.ID(), p.server.ID())
	}
	if p.client.Role() != RoleClient || p.server.Role() != RolePrimary {
		t.Fatalf("roles: %v %v", p.client.Role(), p.server.Role())
	}
	if !errors.Is(p.client.AddPath("127.0.0.1:1"), ErrNotPrimary) || !errors.Is(p.client.RemovePath("x"), ErrNotPrimary) {
		t.Fatal("client AddPath/RemovePath must fail with ErrNotPrimary")
	}
	cp, sp := p.client.GetAllPaths(), p.server.GetAllPaths()
	if len(cp) != 1 || len(sp) != 1 || cp[0].PathID != sp[0].PathID || !cp[0].IsPrimary || cp[0].Status != PathActive {
		t.Fatalf("paths: client %+v server %+v", cp, sp)
	}
	if p.client.RemoteAddr().String() != p.ln.Addr().String() {
		t.Fatalf("client remote addr %v, listener %v", p.client.RemoteAddr(), p.ln.Addr())
	}
}

func TestEchoConcurrentStreams(t *testing.T) {
	p := newPair(t, nil, nil)
	ctx := testContext(t)
	go func() {
		for {
			s, err := p.server.AcceptStream(ctx)
			if err != nil {
				return
			}
			go func() {
				io.Copy(s, s)
				s.Close()
			}()
		}
	}()
	const streams = 48
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := p.client.OpenStreamSync(ctx)
			if err != nil {
				errs <- err
				return
			}
			msg := make([]byte, 1+i*20011)
			pattern(msg, uint64(i))
			go func() {
				s.Write(msg)
				s.Close()
			}()
			got, err := io.ReadAll(s)
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, msg) {
				errs <- errors.New("echo mismatch")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestDownload64MiB(t *testing.T) {
	const size = 64 << 20
	p := newPair(t, nil, nil)
	ctx := testContext(t)
	want := sha256.New()
	sent := make(chan error, 1)
	go func() {
		s, err := p.server.OpenStreamSync(ctx)
		if err != nil {
			sent <- err
			return
		}
		buf := make([]byte, 1<<20)
		for i := range size / len(buf) {
			pattern(buf, uint64(i))
			want.Write(buf)
			if _, err := s.Write(buf); err != nil {
				sent <- err
				return
			}
		}
		sent <- s.Close()
	}()
	s, err := p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("got %d bytes, sha256 %x, want %d bytes, %x", n, got.Sum(nil), size, want.Sum(nil))
	}
}

func TestUpload(t *testing.T) {
	const size = 16 << 20
	p := newPair(t, nil, nil)
	ctx := testContext(t)
	go func() {
		s, err := p.server.AcceptStream(ctx)
		if err != nil {
			return
		}
		h := sha256.New()
		io.Copy(h, s)
		s.Write(h.Sum(nil))
		s.Close()
	}()
	s, err := p.client.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, size)
	pattern(buf, 7)
	if _, err := s.Write(buf); err != nil {
		t.Fatal(err)
	}
	s.Close()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(buf)
	if !bytes.Equal(got, want[:]) {
		t.Fatalf("server hashed %x, want %x", got, want)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

func TestDeadlines(t *testing.T) {
	p := newPair(t, &Config{StreamReceiveWindow: 64 << 10}, &Config{StreamReceiveWindow: 64 << 10})
	ctx := testContext(t)
	cs, err := p.client.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	ss, err := p.server.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("read deadline", func(t *testing.T) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(ss, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("read %q, %v", buf, err)
		}
		ss.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := ss.Read(buf); !isTimeout(err) {
			t.Fatalf("Read past deadline: %v, want a timeout", err)
		}
		// A deadline in the past fails at once; clearing it lets data through again.
		ss.SetReadDeadline(time.Now().Add(-time.Second))
		if _, err := ss.Read(buf); !isTimeout(err) {
			t.Fatalf("Read with past deadline: %v", err)
		}
		ss.SetReadDeadline(time.Time{})
		cs.Write([]byte("again"))
		if _, err := io.ReadFull(ss, buf); err != nil || string(buf) != "again" {
			t.Fatalf("read %q, %v after clearing the deadline", buf, err)
		}
	})

	t.Run("deadline moved while blocked", func(t *testing.T) {
		done := make(chan error, 1)
		go func() {
			_, err := ss.Read(make([]byte, 1))
			done <- err
		}()
		ss.SetReadDeadline(time.Now().Add(time.Hour))
		ss.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if err := <-done; !isTimeout(err) {
			t.Fatalf("blocked Read after moving the deadline: %v", err)
		}
		ss.SetReadDeadline(time.Time{})
	})

	t.Run("write deadline", func(t *testing.T) {
		// The server never reads: the client exhausts the 64 KiB credit and blocks.
		cs.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := cs.Write(make([]byte, 1<<20))
		if !isTimeout(err) {
			t.Fatalf("Write past deadline: %d, %v", n, err)
		}
		if n > 64<<10 {
			t.Fatalf("wrote %d bytes past a 64 KiB window", n)
		}
	})
}

func TestCancelWrite(t *testing.T) {
	for _, dir := range []string{"client to server", "server to client"} {
		t.Run(dir, func(t *testing.T) {
			p := newPair(t, nil, nil)
			ctx := testContext(t)
			writer, reader := Session(p.client), Session(p.server)
			if dir == "server to client" {
				writer, reader = reader, writer
			}
			ws, err := writer.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ws.Write([]byte("partial"))
			rs, err := reader.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 7)
			if _, err := io.ReadFull(rs, buf); err != nil {
				t.Fatal(err)
			}
			ws.CancelWrite(42)
			_, err = io.ReadAll(rs)
			var se *StreamError
			if !errors.As(err, &se) || se.ErrorCode != 42 || !se.Remote || uint64(se.StreamID) != ws.StreamID() {
				t.Fatalf("reader got %v, want a remote StreamError 42", err)
			}
			if _, err := ws.Write([]byte("x")); !errors.As(err, &se) || se.ErrorCode != 42 || se.Remote {
				t.Fatalf("Write after CancelWrite: %v", err)
			}
			select {
			case <-ws.Context().Done():
			default:
				t.Fatal("stream context not canceled by CancelWrite")
			}
		})
	}
}

func TestCancelRead(t *testing.T) {
	for _, dir := range []string{"client reads", "server reads"} {
		t.Run(dir, func(t *testing.T) {
			p := newPair(t, nil, nil)
			ctx := testContext(t)
			writer, reader := Session(p.server), Session(p.client)
			if dir == "server reads" {
				writer, reader = reader, writer
			}
			ws, err := writer.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ws.Write([]byte("x"))
			rs, err := reader.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			rs.CancelRead(7)
			var se *StreamError
			if _, err := rs.Read(make([]byte, 1)); !errors.As(err, &se) || se.ErrorCode != 7 || se.Remote {
				t.Fatalf("Read after CancelRead: %v", err)
			}
			// The writer keeps writing until STOP_SENDING arrives, then fails with the code.
			buf := make([]byte, 32<<10)
			for {
				if _, err = ws.Write(buf); err != nil {
					break
				}
			}
			if !errors.As(err, &se) || se.ErrorCode != 7 || !se.Remote {
				t.Fatalf("writer got %v, want a remote StreamError 7", err)
			}
		})
	}
}

func TestCloseWithError(t *testing.T) {
	for _, closer := range []string{"client", "server"} {
		t.Run(closer+" closes", func(t *testing.T) {
			p := newPair(t, &Config{StreamReceiveWindow: 64 << 10}, &Config{StreamReceiveWindow: 64 << 10})
			ctx := testContext(t)
			a, b := Session(p.client), Session(p.server)
			if closer == "server" {
				a, b = b, a
			}
			// b has a stream blocked in Read, one blocked in Write, and an AcceptStream pending.
			as, err := a.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			as.Write([]byte("x"))
			bs, err := b.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			bw, err := b.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			errs := make(chan error, 3)
			go func() { _, err := io.ReadAll(bs); errs <- err }()
			go func() {
				var err error
				for err == nil {
					_, err = bw.Write(make([]byte, 16<<10))
				}
				errs <- err
			}()
			go func() { _, err := b.AcceptStream(ctx); errs <- err }()

			// Wait until the writer is blocked on credit: the peer holds a full window.
			peer := a.(*session)
			waitFor(t, func() bool {
				s, _ := peer.streams.get(bw.StreamID())
				if s == nil {
					return false
				}
				s.recv.mu.Lock()
				defer s.recv.mu.Unlock()
				return s.recv.buf.HighestReceived() == 64<<10
			})

			if err := a.CloseWithError(1234, "bye"); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				err := <-errs
				var ae *ApplicationError
				if !errors.As(err, &ae) || ae.ErrorCode != 1234 {
					t.Fatalf("pending call returned %v, want ApplicationError 1234", err)
				}
			}
			for _, s := range []Session{a, b} {
				select {
				case <-s.Context().Done():
				case <-ctx.Done():
					t.Fatal("session context not canceled")
				}
			}
			var ae *ApplicationError
			if _, err := b.OpenStream(); !errors.As(err, &ae) || !ae.Remote || ae.ErrorMessage != "bye" {
				t.Fatalf("OpenStream on the closed peer: %v", err)
			}
			if _, err := a.AcceptStream(ctx); !errors.As(err, &ae) || ae.Remote {
				t.Fatalf("AcceptStream on the closed side: %v", err)
			}
		})
	}
}

// waitFor polls cond until it holds; the test's own timeout bounds it.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		if t.Context().Err() != nil {
			t.Fatal("condition never held")
		}
		time.Sleep(time.Millisecond)
	}
}

// A reader that never reads one logical stream must not stall another that shares its real
// QUIC stream: the data reader never blocks, credit bounds the memory.
func TestSlowReaderDoesNotStallFast(t *testing.T) {
	conf := &Config{StreamsPerRealStream: 4, StreamReceiveWindow: 256 << 10}
	p := newPair(t, conf, conf)
	ctx := testContext(t)
	slow, err := p.server.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := p.server.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slowDone := make(chan error, 1)
	go func() {
		_, err := slow.Write(make([]byte, 4<<20)) // far beyond the window: blocks on credit
		slowDone <- err
	}()
	const size = 16 << 20
	go func() {
		buf := make([]byte, size)
		pattern(buf, 3)
		fast.Write(buf)
		fast.Close()
	}()
	var cfast Stream
	for cfast == nil {
		s, err := p.client.AcceptStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.StreamID() == fast.StreamID() {
			cfast = s
		}
	}
	got, err := io.ReadAll(cfast)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	pattern(want, 3)
	if !bytes.Equal(got, want) {
		t.Fatal("fast stream corrupted")
	}
	if n := p.server.primary.pool.size(); n != 1 {
		t.Fatalf("the two streams used %d real streams, want them to share 1", n)
	}
	select {
	case err := <-slowDone:
		t.Fatalf("slow writer finished (%v) though nobody reads", err)
	default:
	}
	// The unread stream holds at most its window.
	s, _ := p.client.streams.get(slow.StreamID())
	s.recv.mu.Lock()
	held := s.recv.buf.HighestReceived()
	s.recv.mu.Unlock()
	if held > 256<<10 {
		t.Fatalf("unread stream buffered %d bytes, window is 256 KiB", held)
	}
	p.server.Close()
	if err := <-slowDone; err == nil {
		t.Fatal("slow writer did not fail when the session closed")
	}
}

func TestStreamLimit(t *testing.T) {
	p := newPair(t, nil, &Config{MaxIncomingStreams: 2})
	ctx := testContext(t)
	var open []Stream
	for range 2 {
		s, err := p.client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, s)
	}
	if _, err := p.client.OpenStream(); !errors.Is(err, ErrStreamLimit) {
		t.Fatalf("third OpenStream: %v, want ErrStreamLimit", err)
	}
	opened := make(chan error, 1)
	go func() {
		_, err := p.client.OpenStreamSync(ctx)
		opened <- err
	}()
	// Finish the first stream on both sides: the server grants one more.
	ss, err := p.server.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	open[0].Close()
	if _, err := io.ReadAll(ss); err != nil {
		t.Fatal(err)
	}
	ss.Close()
	if _, err := io.ReadAll(open[0]); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatalf("OpenStreamSync after a stream finished: %v", err)
	}
}

func TestListenerClose(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", testTLS.server, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept(context.Background())
		done <- err
	}()
	ln.Close()
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []*Config{
		{MaxMessageSize: 100},
		{MaxMessageSize: 1 << 30},
		{StreamReceiveWindow: -1},
		{StreamReceiveWindow: 2 << 30},
	} {
		if _, err := Listen("127.0.0.1:0", testTLS.server, c); err == nil {
			t.Errorf("Listen accepted %+v", c)
		}
	}
	if _, err := Dial(context.Background(), "127.0.0.1:1", nil, nil); err == nil {
		t.Error("Dial without a tls.Config succeeded")
	}
}
