package kwik

import (
	"bytes"
	"errors"
	"github.com/kwik-go/kwik/internal/netsim"
	"io"
	"sync"
	"testing"
)

func TestFanoutRequest(t *testing.T) {
	off, n, err := ParseFanoutRequest(FanoutRequest(12345, 678))
	if err != nil || off != 12345 || n != 678 {
		t.Fatalf("round trip: %d %d %v", off, n, err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 15), FanoutRequest(-1, 5), FanoutRequest(0, 0), FanoutRequest(1<<62, 1<<62)} {
		if _, _, err := ParseFanoutRequest(bad); err == nil {
			t.Errorf("accepted %x", bad)
		}
	}
}

// fanoutDownload serves resource with Fanout from the primary and the secondaries of ms
// (which serve it with ServeFanout) after header, written by the primary first, and checks
// what the client reads.
func fanoutDownload(t *testing.T, ms *multiSource, header, resource []byte, opts *FanoutOptions, onHalf func(), secSrc ...io.ReaderAt) *FanoutResult {
	ctx := testContext(t)
	src := bytes.NewReader(resource)
	for i, sec := range ms.secs {
		var from io.ReaderAt = src
		if i < len(secSrc) && secSrc[i] != nil {
			from = secSrc[i]
		}
		go ServeFanout(ctx, sec, from)
	}
	res := make(chan *FanoutResult, 1)
	go func() {
		st, err := ms.p.server.OpenStreamSync(ctx)
		if err != nil {
			t.Error(err)
			res <- nil
			return
		}
		if _, err := st.Write(header); err != nil {
			t.Error(err)
			res <- nil
			return
		}
		fr, err := Fanout(ctx, st, src, int64(len(resource)), ms.ids, opts)
		if err != nil {
			t.Errorf("Fanout: %v", err)
		}
		res <- fr
	}()
	cs, err := ms.p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := cs.Read(buf)
		got = append(got, buf[:n]...)
		if onHalf != nil && len(got) > len(resource)/2 {
			onHalf()
			onHalf = nil
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
	}
	if want := append(bytes.Clone(header), resource...); !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d, not intact", len(got), len(want))
	}
	return <-res
}

func TestFanout(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts *FanoutOptions
		all  bool // every secondary must serve a part
	}{
		// The defaults may leave a secondary out: here the primary is not behind a link, and
		// a source that looks slower is not worth a gap.
		{"defaults", nil, false},
		{"small chunks", &FanoutOptions{ChunkSize: 128 << 10}, true},
		// Pieces larger than Fanout's own buffer, one delegation at a time.
		{"large chunks", &FanoutOptions{ChunkSize: 600 << 10, MaxInFlight: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := newMultiSource(t, 2, delegationConf)
			resource := content(0, 8<<20)
			fr := fanoutDownload(t, ms, nil, resource, tc.opts, nil)
			var total int64
			for _, id := range append([]string{""}, ms.ids...) {
				total += fr.Bytes[id]
			}
			if total != int64(len(resource)) || len(fr.Failed) != 0 {
				t.Fatalf("shares %v (sum %d), failures %v", fr.Bytes, total, fr.Failed)
			}
			for _, id := range ms.ids {
				if tc.all && fr.Bytes[id] == 0 {
					t.Errorf("secondary %s served nothing: %v", id, fr.Bytes)
				}
			}
		})
	}
}

func TestFanoutSourceKilled(t *testing.T) {
	ms := newMultiSource(t, 2, delegationConf)
	resource := content(0, 8<<20)
	// After a header, so that stream offsets are not the resource's: the refill must read src
	// at the range's own offsets.
	header := content(1, 1001)
	// The second secondary's link goes dark as it starts on its second piece: that delegation
	// and any after it fail.
	dying := &dyingReader{ReaderAt: bytes.NewReader(resource), piece: 128 << 10, at: 2, die: func() { ms.relay[1].SetBlackhole(true) }}
	fr := fanoutDownload(t, ms, header, resource, &FanoutOptions{ChunkSize: 128 << 10}, nil, nil, dying)
	if len(fr.Failed) == 0 || fr.Refilled == 0 {
		t.Fatalf("no failure after a source died: %+v", fr)
	}
	for _, de := range fr.Failed {
		if de.PathID != ms.ids[1] || !errors.Is(de, ErrPathDead) {
			t.Fatalf("failure %+v: %v", de, de.Err)
		}
	}
}

// dyingReader calls die as its reader starts on its at-th piece (a read at a multiple of
// piece).
type dyingReader struct {
	io.ReaderAt
	piece int64
	at    int
	die   func()
	mu    sync.Mutex
	n     int
}

func (r *dyingReader) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	if off%r.piece == 0 {
		r.n++
		if r.n == r.at {
			r.die()
		}
	}
	r.mu.Unlock()
	return r.ReaderAt.ReadAt(p, off)
}

// A secondary far slower than the primary (2 Mbit/s behind its link, the primary on loopback)
// does not hold the transfer for the seconds its first pieces would take: the primary, done
// with its own, sends them again; the client keeps the first copy, completes the delegations
// and tells the secondary to stop; Fanout returns with nothing failed.
func TestFanoutSlowSecondaryTail(t *testing.T) {
	ms := newMultiSource(t, 1, delegationConf)
	slow := netsim.LinkConfig{RateBps: 2e6}
	if err := ms.relay[0].SetConfig(netsim.Config{Up: slow, Down: slow}); err != nil {
		t.Fatal(err)
	}
	resource := content(0, 16<<20)
	fr := fanoutDownload(t, ms, nil, resource, nil, nil)
	if len(fr.Failed) != 0 || fr.Refilled != 0 {
		t.Fatalf("failures %v, refilled %d", fr.Failed, fr.Refilled)
	}
	if fr.Duplicated == 0 || fr.Duplicated > int64(len(resource))/8 {
		t.Fatalf("the primary sent again %d bytes, want some and at most an eighth; shares %v", fr.Duplicated, fr.Bytes)
	}
}
