package kwik

import (
	"fmt"
	"io"
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
