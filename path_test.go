package kwik

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"testing"
)

// The real-stream pool grows with the logical streams that send (StreamsPerRealStream each)
// and shrinks back to one idle real stream when they finish.
func TestSendPool(t *testing.T) {
	for _, tc := range []struct {
		ratio, max, streams, wantReal int
	}{
		{ratio: 1, max: 16, streams: 8, wantReal: 8},
		{ratio: 1, max: 6, streams: 8, wantReal: 6},
		{ratio: 4, max: 16, streams: 8, wantReal: 2},
		{ratio: 4, max: 16, streams: 9, wantReal: 3},
		{ratio: 4, max: 6, streams: 40, wantReal: 6},
	} {
		t.Run(fmt.Sprintf("ratio %d max %d streams %d", tc.ratio, tc.max, tc.streams), func(t *testing.T) {
			conf := &Config{StreamsPerRealStream: tc.ratio, MaxRealStreams: tc.max}
			p := newPair(t, conf, conf)
			ctx := testContext(t)
			pool := &p.client.primary.pool
			var streams []Stream
			for i := range tc.streams {
				s, err := p.client.OpenStreamSync(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.Write([]byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
				streams = append(streams, s)
			}
			if got := pool.size(); got != tc.wantReal {
				t.Fatalf("%d logical streams at ratio %d use %d real streams, want %d", tc.streams, tc.ratio, got, tc.wantReal)
			}
			// Every byte arrives on the right logical stream whatever real stream carried it.
			for i := range tc.streams {
				ss, err := p.server.AcceptStream(ctx)
				if err != nil {
					t.Fatal(err)
				}
				b := make([]byte, 1)
				if _, err := io.ReadFull(ss, b); err != nil || b[0] != byte(i) || ss.StreamID() != streams[i].StreamID() {
					t.Fatalf("stream %d: read %v, %v", ss.StreamID(), b, err)
				}
			}
			for _, s := range streams {
				s.Close()
			}
			if got := pool.size(); got != 1 {
				t.Fatalf("after every stream closed the pool holds %d real streams, want 1", got)
			}
			// The load is spread: no real stream carries more than its share.
			pool.mu.Lock()
			for _, rs := range pool.streams {
				if rs.users != 0 {
					t.Errorf("idle real stream still has %d users", rs.users)
				}
			}
			pool.mu.Unlock()
		})
	}
}

func TestSendPoolSpread(t *testing.T) {
	conf := &Config{StreamsPerRealStream: 4, MaxRealStreams: 3}
	p := newPair(t, conf, conf)
	ctx := testContext(t)
	for range 12 {
		s, err := p.client.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.Write([]byte("x"))
	}
	pool := &p.client.primary.pool
	pool.mu.Lock()
	defer pool.mu.Unlock()
	if len(pool.streams) != 3 {
		t.Fatalf("%d real streams, want 3", len(pool.streams))
	}
	for _, rs := range pool.streams {
		if rs.users != 4 {
			t.Errorf("real stream carries %d logical streams, want 4", rs.users)
		}
	}
}

// Small frames that arrive while their real stream is busy go out together: fifty writers on
// one real stream, held back by a write under way, cost one DataPacket, and every byte still
// lands on its own logical stream.
func TestBatching(t *testing.T) {
	const n = 50
	conf := &Config{StreamsPerRealStream: 64, MaxRealStreams: 1}
	p := newPair(t, conf, conf)
	ctx := testContext(t)
	first, err := p.client.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Write([]byte("x")); err != nil { // opens the real stream, and keeps it
		t.Fatal(err)
	}
	pool := &p.client.primary.pool
	pool.mu.Lock()
	rs := pool.streams[0]
	pool.mu.Unlock()

	rs.mu.Lock() // a write under way
	before := p.client.primary.stats.packetsSent.Load()
	streams := make([]Stream, n)
	written := make(chan error, n)
	for i := range streams {
		if streams[i], err = p.client.OpenStreamSync(ctx); err != nil {
			t.Fatal(err)
		}
		go func() {
			_, err := streams[i].Write(bytes.Repeat([]byte{byte(i)}, 100))
			written <- err
		}()
	}
	waitFor(t, func() bool {
		rs.batch.mu.Lock()
		defer rs.batch.mu.Unlock()
		return len(rs.batch.queue.frames) == n
	})
	rs.unlockAndDrain()
	for range n {
		if err := <-written; err != nil {
			t.Fatal(err)
		}
	}
	if got := p.client.primary.stats.packetsSent.Load() - before; got != 1 {
		t.Fatalf("%d small frames queued behind a write went out in %d packets, want 1", n, got)
	}
	if _, err := p.server.AcceptStream(ctx); err != nil { // the first stream
		t.Fatal(err)
	}
	for range n {
		ss, err := p.server.AcceptStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(streams, func(s Stream) bool { return s.StreamID() == ss.StreamID() })
		b := make([]byte, 100)
		if _, err := io.ReadFull(ss, b); err != nil || !bytes.Equal(b, bytes.Repeat([]byte{byte(i)}, 100)) {
			t.Fatalf("stream %d: %v, %v", ss.StreamID(), b[:4], err)
		}
	}
}

// Many logical streams on two real streams write many small pieces at once: whatever the
// batches, every stream receives exactly its bytes in order.
func TestBatchingStress(t *testing.T) {
	const streams, writes = 100, 30
	conf := &Config{StreamsPerRealStream: 64, MaxRealStreams: 2, MaxIncomingStreams: streams}
	p := newPair(t, conf, conf)
	ctx := testContext(t)
	errs := make(chan error, 2*streams)
	index := make(map[uint64]int) // stream ID -> i
	for i := range streams {
		st, err := p.client.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		index[st.StreamID()] = i
		go func() {
			for w := range writes {
				if _, err := st.Write(content(int64(i*writes+w)*7, 7)); err != nil {
					errs <- err
					return
				}
			}
			errs <- st.Close()
		}()
	}
	for range streams {
		ss, err := p.server.AcceptStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := index[ss.StreamID()]
		go func() {
			got, err := io.ReadAll(ss)
			if err == nil && !bytes.Equal(got, content(int64(i*writes)*7, writes*7)) {
				want := content(int64(i*writes)*7, writes*7)
				k := 0
				for k < len(got) && k < len(want) && got[k] == want[k] {
					k++
				}
				err = fmt.Errorf("stream %d: %d bytes, not its own from byte %d: % x, want % x", ss.StreamID(), len(got), k, got[k:min(k+14, len(got))], want[k:min(k+14, len(want))])
			}
			errs <- err
		}()
	}
	for range 2 * streams {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// realStreamOf returns the real stream a logical stream sends on.
func realStreamOf(s Stream) *realStream {
	st := s.(*stream)
	st.send.mu.Lock()
	defer st.send.mu.Unlock()
	return st.send.rs
}

// idleRealStream opens three logical streams, one per real stream, and closes the first, so
// that the pool has an idle real stream and lets go of the next one falling idle.
func idleRealStream(t *testing.T) (p *pair, s Stream, rs *realStream) {
	conf := &Config{StreamsPerRealStream: 1, MaxRealStreams: 4}
	p = newPair(t, conf, conf)
	ctx := testContext(t)
	var streams []Stream
	for range 3 {
		st, err := p.client.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	if err := streams[0].Close(); err != nil {
		t.Fatal(err)
	}
	if got := p.client.primary.pool.size(); got != 3 {
		t.Fatalf("%d real streams, want 3", got)
	}
	return p, streams[1], realStreamOf(streams[1])
}

// A fin queued while the real stream's holder is between its last drain and its idle check,
// by the logical stream whose release lets the pool drop that real stream: the holder must
// not close the real stream under the fin, which would be lost (and the peer's Read hang).
func TestBatchingCloseWithFrameQueued(t *testing.T) {
	p, s, rs := idleRealStream(t)
	ctx := testContext(t)
	rs.mu.Lock()                      // a holder that has just drained the queue
	if err := s.Close(); err != nil { // queues the fin; the release asks for the close
		t.Fatal(err)
	}
	if !rs.closeWhenIdle.Load() {
		t.Fatal("the pool kept the real stream")
	}
	rs.closeIfIdle() // the holder's idle check
	rs.unlockAndDrain()
	rs.batch.mu.Lock()
	err := rs.batch.err
	rs.batch.mu.Unlock()
	if err != nil {
		t.Fatalf("the fin queued behind the idle check failed: %v", err)
	}
	if rs.qs.Context().Err() == nil {
		t.Fatal("the idle real stream was not closed")
	}
	for {
		ss, err := p.server.AcceptStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ss.StreamID() != s.StreamID() {
			continue
		}
		if b, err := io.ReadAll(ss); err != nil || string(b) != "x" {
			t.Fatalf("read %q, %v", b, err)
		}
		return
	}
}

// The pool lets a real stream go while another goroutine holds it, just after that holder's
// idle check: the holder must still close it, or the QUIC stream stays open for good.
func TestBatchingReleaseAfterIdleCheck(t *testing.T) {
	p, s, rs := idleRealStream(t)
	rs.mu.Lock() // a holder, which will find nothing queued
	var fired atomic.Bool
	hook := func(r *realStream) {
		if r != rs || !fired.CompareAndSwap(false, true) {
			return
		}
		s.CancelWrite(1) // the last user goes: release finds mu held
		if !rs.closeWhenIdle.Load() {
			t.Error("the pool kept the real stream")
		}
	}
	testHookAfterIdleCheck.Store(&hook)
	defer testHookAfterIdleCheck.Store(nil)
	rs.unlockAndDrain()
	if rs.qs.Context().Err() == nil {
		t.Fatal("the real stream the pool let go of is still open")
	}
	_ = p
}
