package kwik

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/netsim"
)

// content is the test resource: every byte depends on its offset, so a misplaced byte shows.
func content(off, n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		x := uint64(off + int64(i))
		x ^= x >> 7
		x *= 0x9e3779b97f4a7c15
		b[i] = byte(x >> 56)
	}
	return b
}

func chunkRequest(off, n int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(off)), uint64(n))
}

// secondaryBehaviour decides what a secondary writes for a request; nil serves it whole.
type secondaryBehaviour func(st Stream, off, n int64) error

// serveSecondary answers every delegation the secondary receives until its session ends.
func serveSecondary(t *testing.T, sec *session, behave secondaryBehaviour) {
	t.Helper()
	go func() {
		for {
			st, err := sec.AcceptStream(context.Background())
			if err != nil {
				return
			}
			go func() {
				req, err := io.ReadAll(st)
				if err != nil || len(req) != 16 {
					t.Errorf("secondary read request %x: %v", req, err)
					return
				}
				off, n := int64(binary.BigEndian.Uint64(req)), int64(binary.BigEndian.Uint64(req[8:]))
				if behave != nil {
					if err := behave(st, off, n); err != nil {
						return
					}
				} else if _, err := st.Write(content(off, n)); err != nil {
					return
				}
				st.Close()
			}()
		}
	}()
}

// serveInterleaved has the primary serve size bytes on st in chunks: its own, then one per
// secondary in turn. It refills every failed delegation as soon as it fails (the reader
// cannot pass the gap, so credit for later chunks waits on the refill), and returns the
// delegation errors.
func serveInterleaved(t *testing.T, st Stream, size, chunk int64, secondaries []string) []*DelegationError {
	t.Helper()
	ctx := testContext(t)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []*DelegationError
	)
	defer wg.Wait()
	watch := func(d *Delegation) {
		defer wg.Done()
		err := d.Wait(ctx)
		if err == nil {
			return
		}
		var de *DelegationError
		if !errors.As(err, &de) {
			t.Errorf("Wait: %v", err)
			return
		}
		if de.Offset < d.Offset || de.Offset+de.Remaining != d.Offset+d.Length || de.PathID != d.PathID {
			t.Errorf("delegation [%d, +%d) on %s failed with suffix [%d, +%d) on %s", d.Offset, d.Length, d.PathID, de.Offset, de.Remaining, de.PathID)
		}
		mu.Lock()
		failures = append(failures, de)
		mu.Unlock()
		if _, err := st.WriteAt(content(de.Offset, de.Remaining), de.Offset); err != nil {
			t.Errorf("WriteAt refill: %v", err)
		}
	}
	for i, off := 0, int64(0); off < size; i++ {
		n := min(chunk, size-off)
		src := i % (len(secondaries) + 1)
		if src == 0 {
			if _, err := st.Write(content(off, n)); err != nil {
				t.Errorf("primary Write: %v", err)
				return nil
			}
		} else {
			d, err := st.Delegate(secondaries[src-1], n, chunkRequest(off, n))
			switch {
			case errors.Is(err, ErrPathDead):
				// That secondary is gone: serve the chunk from here.
				if _, err := st.Write(content(off, n)); err != nil {
					t.Errorf("primary Write: %v", err)
					return nil
				}
			case err != nil:
				t.Errorf("Delegate: %v", err)
				return nil
			default:
				wg.Add(1)
				go watch(d)
			}
		}
		off += n
	}
	if err := st.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
	return failures
}

type multiSource struct {
	p     *pair
	ids   []string
	secs  []*session
	lns   []*Listener
	relay []*netsim.Relay
	// behaved: the secondaries' own behaviours serve every delegation (fanoutDownload then
	// starts no ServeFanout to compete with them for it).
	behaved bool
}

// newMultiSource builds a client, a primary and n secondaries, secondary i behind a netsim
// relay (so that tests can blackhole it).
func newMultiSource(t *testing.T, n int, conf *Config, behaviours ...secondaryBehaviour) *multiSource {
	sconf := *conf
	sconf.JoinKey = testJoinKey
	ms := &multiSource{p: newPair(t, conf, &sconf)}
	for i := range n {
		ln := listen(t, &sconf)
		r := relay(t, ln, netsim.Config{})
		id, sec := addPath(t, ms.p.server, ln, r.Addr().String())
		var b secondaryBehaviour
		if i < len(behaviours) {
			b = behaviours[i]
		}
		serveSecondary(t, sec, b)
		ms.ids, ms.secs, ms.lns, ms.relay = append(ms.ids, id), append(ms.secs, sec), append(ms.lns, ln), append(ms.relay, r)
	}
	return ms
}

// download serves size bytes from the primary and the secondaries and checks what the client
// reads; it returns the primary's delegation failures.
func (ms *multiSource) download(t *testing.T, size, chunk int64) []*DelegationError {
	ctx := testContext(t)
	var failures []*DelegationError
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		st, err := ms.p.server.OpenStreamSync(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		failures = serveInterleaved(t, st, size, chunk, ms.ids)
	}()
	cs, err := ms.p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(cs)
	if err != nil {
		t.Fatalf("client read %d bytes, then %v", len(got), err)
	}
	wg.Wait()
	if int64(len(got)) != size || !bytes.Equal(got, content(0, size)) {
		first := 0
		for first < len(got) && int64(first) < size && got[first] == content(int64(first), 1)[0] {
			first++
		}
		t.Fatalf("client got %d bytes, want %d; first wrong byte at %d", len(got), size, first)
	}
	return failures
}

// The primary sends every delegation for an active secondary on a delegation stream of its
// own, none on the control stream, where a lost packet would hold up all behind it
// (PROTOCOL.md §14).
func TestDelegationsOnTheirOwnStreams(t *testing.T) {
	ms := newMultiSource(t, 1, delegationConf)
	if f := ms.download(t, 4<<20, 256<<10); len(f) != 0 {
		t.Fatalf("delegations failed: %v", f)
	}
	ms.p.server.delegs.mu.Lock()
	made := ms.p.server.delegs.next
	ms.p.server.delegs.mu.Unlock()
	alone := ms.p.client.primary.stats.delegationsAlone.Load()
	if made == 0 || alone != made {
		t.Fatalf("%d of the primary's %d delegations came on delegation streams, want all", alone, made)
	}
}

var delegationConf = &Config{StreamReceiveWindow: 2 << 20, HeartbeatInterval: 100e6, PathTimeout: 600e6}

func TestDelegationInterleaved(t *testing.T) {
	ms := newMultiSource(t, 2, delegationConf)
	if f := ms.download(t, 12<<20, 256<<10); len(f) != 0 {
		t.Fatalf("delegations failed: %v", f)
	}
	// Every source carried its share: the secondaries' data plane was used.
	for i, sec := range ms.secs {
		if sent := sec.primary.stats.bytesSent.Load(); sent < 3<<20 {
			t.Errorf("secondary %d sent only %d bytes", i, sent)
		}
	}
}

// The client tells the primary, with each outcome, what it has received on the delegation's
// path and when (DelegationStatus.path_received and received_at_us, from which Fanout
// measures the path's rate): its QUIC packets' bytes, at least the range, and no more than
// the secondary sent.
func TestDelegationReportsPathReceived(t *testing.T) {
	ms := newMultiSource(t, 1, delegationConf)
	ctx := testContext(t)
	const n = 1 << 20
	var d *Delegation
	served := make(chan error, 1)
	go func() {
		st, err := ms.p.server.OpenStreamSync(ctx)
		if err == nil {
			d, err = st.Delegate(ms.ids[0], n, chunkRequest(0, n))
		}
		if err == nil {
			err = errors.Join(st.Close(), d.Wait(ctx))
		}
		served <- err
	}()
	cs, err := ms.p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(cs)
	if err != nil || !bytes.Equal(got, content(0, n)) {
		t.Fatalf("client read %d bytes (%v)", len(got), err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	sent := ms.secs[0].primary.conn.ConnectionStats().BytesSent
	if got := uint64(d.received.bytes); got < n || got > sent || d.received.at <= 0 {
		t.Fatalf("the client reported %d bytes received on the path at %v; want from %d to what the secondary sent, %d, and a time", got, d.received.at, n, sent)
	}
}

func TestDelegationClosedShort(t *testing.T) {
	const short = 100_000
	ms := newMultiSource(t, 2, delegationConf, nil, func(st Stream, off, n int64) error {
		_, err := st.Write(content(off, short)) // and Close: the rest is missing
		return err
	})
	failures := ms.download(t, 12<<20, 256<<10)
	if len(failures) == 0 {
		t.Fatal("no delegation failed")
	}
	for _, de := range failures {
		if de.PathID != ms.ids[1] || de.Remaining != 256<<10-short || !errors.Is(de, ErrOffsetMismatch) {
			t.Fatalf("failure %+v (%v), want path %s missing its last %d bytes", de, de.Err, ms.ids[1], 256<<10-short)
		}
	}
}

func TestDelegationSecondaryBlackholed(t *testing.T) {
	var once sync.Once
	blackholed := make(chan struct{})
	var ms *multiSource
	built := make(chan struct{}) // ms is set: the behaviour runs on the secondaries' goroutines
	ms = newMultiSource(t, 2, delegationConf, nil, func(st Stream, off, n int64) error {
		<-built
		// Half the first range goes out, then the path goes dark.
		if _, err := st.Write(content(off, n/2)); err != nil {
			return err
		}
		once.Do(func() {
			ms.relay[1].SetBlackhole(true)
			close(blackholed)
		})
		_, err := st.Write(content(off+n/2, n-n/2))
		return err
	})
	close(built)
	failures := ms.download(t, 12<<20, 256<<10)
	<-blackholed
	if len(failures) == 0 {
		t.Fatal("no delegation failed")
	}
	for _, de := range failures {
		if de.PathID != ms.ids[1] || !errors.Is(de, ErrPathDead) {
			t.Fatalf("failure %+v (%v), want path %s dead", de, de.Err, ms.ids[1])
		}
	}
	if _, ok := pathByID(ms.p.server.GetDeadPaths(), ms.ids[1]); !ok {
		t.Fatal("the blackholed path is not dead")
	}
}

func TestDelegationOutsideRange(t *testing.T) {
	ms := newMultiSource(t, 2, delegationConf, nil, func(st Stream, off, n int64) error {
		ds := st.(*delegatedStream)
		rs, err := ds.p.pool.assign()
		if err != nil {
			return err
		}
		// Overwrite the byte just before the range, which is the primary's.
		return rs.writeFrame(ds.streamID, uint64(off-1), []byte{0xff}, false)
	})
	failures := ms.download(t, 4<<20, 256<<10)
	if len(failures) == 0 {
		t.Fatal("no delegation failed")
	}
	<-ms.secs[1].Context().Done()
	if err := context.Cause(ms.secs[1].Context()); !errors.Is(err, ErrOffsetMismatch) {
		t.Fatalf("the intruding secondary ended with %v, want KWIK_OFFSET_MISMATCH", err)
	}
	if ms.p.client.Context().Err() != nil {
		t.Fatal("the session ended")
	}
}

func TestDelegateErrors(t *testing.T) {
	ms := newMultiSource(t, 1, delegationConf)
	ctx := testContext(t)
	st, err := ms.p.server.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Delegate("ffffffffffffffff", 10, nil); !errors.Is(err, ErrPathNotFound) {
		t.Fatalf("Delegate to an unknown path: %v", err)
	}
	if _, err := st.Delegate(ms.ids[0], 0, nil); err == nil {
		t.Fatal("Delegate of 0 bytes succeeded")
	}
	if _, err := st.Delegate(ms.p.server.primary.id, 10, nil); err == nil {
		t.Fatal("Delegate to the primary path succeeded")
	}
	if _, err := st.WriteAt([]byte("x"), 0); !errors.Is(err, ErrOffsetMismatch) {
		t.Fatalf("WriteAt outside a failed delegation: %v", err)
	}
	cst, err := ms.p.client.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cst.Delegate(ms.ids[0], 10, nil); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("client Delegate: %v", err)
	}
	if _, err := cst.WriteAt([]byte("x"), 0); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("client WriteAt: %v", err)
	}
}

// A delegation on a stream the client opened: request/response with a multi-source response.
func TestDelegationOnClientStream(t *testing.T) {
	ms := newMultiSource(t, 1, delegationConf)
	ctx := testContext(t)
	served := make(chan struct{})
	defer func() { // its delegations resolve before the test ends (bounded, should it fail early)
		select {
		case <-served:
		case <-time.After(30 * time.Second):
		}
	}()
	go func() {
		defer close(served)
		st, err := ms.p.server.AcceptStream(ctx)
		if err != nil {
			return
		}
		io.ReadAll(st)
		serveInterleaved(t, st, 1<<20, 64<<10, ms.ids)
	}()
	cs, err := ms.p.client.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cs.Write([]byte("GET"))
	cs.Close()
	got, err := io.ReadAll(cs)
	if err != nil || !bytes.Equal(got, content(0, 1<<20)) {
		t.Fatalf("response: %d bytes, %v", len(got), err)
	}
}

// A range the primary reserved and has not written may be delegated after all, even after
// Close (Fanout hands the tail of its own queue to a secondary); a range written, or not
// reserved, may not. A failed delegation of such a range is the primary's to refill, as any.
func TestDelegateReservedRange(t *testing.T) {
	const head, part = 64 << 10, 256 << 10
	for _, fail := range []bool{false, true} {
		name := "delivered"
		var behave secondaryBehaviour
		if fail {
			name = "refilled"
			behave = func(st Stream, off, n int64) error {
				if _, err := st.Write(content(off, n/2)); err != nil {
					return err
				}
				st.CancelWrite(1)
				return errors.New("gave up half way")
			}
		}
		t.Run(name, func(t *testing.T) {
			ms := newMultiSource(t, 1, delegationConf, behave)
			ctx := testContext(t)
			served := make(chan error, 1)
			go func() {
				served <- func() error {
					st, err := ms.p.server.OpenStreamSync(ctx)
					if err != nil {
						return err
					}
					ks := st.(*stream)
					if _, err := st.Write(content(0, head)); err != nil {
						return err
					}
					at1, err := ks.reserve(part)
					if err != nil {
						return err
					}
					at2, err := ks.reserve(part)
					if err != nil {
						return err
					}
					if err := st.Close(); err != nil {
						return err
					}
					var ke *Error
					for _, bad := range [][2]int64{{0, head}, {at2, 2 * part}, {at1 - 1, part}} {
						if _, err := ks.delegate(ms.ids[0], bad[0], bad[1], chunkRequest(bad[0], bad[1]), nil, 0); !errors.As(err, &ke) || ke.Code != CodeOffsetMismatch {
							return fmt.Errorf("delegating [%d, +%d), not a reserved range: %v, want CodeOffsetMismatch", bad[0], bad[1], err)
						}
					}
					d, err := ks.delegate(ms.ids[0], at2, part, chunkRequest(at2, part), nil, 0)
					if err != nil {
						return fmt.Errorf("delegating the reserved [%d, +%d) after Close: %v", at2, part, err)
					}
					if _, err := ks.WriteAt(content(at1, part), at1); err != nil {
						return err
					}
					err = d.Wait(ctx)
					var de *DelegationError
					switch {
					case !fail && err != nil:
						return fmt.Errorf("delegation: %v", err)
					case fail && !errors.As(err, &de):
						return fmt.Errorf("delegation: %v, want a *DelegationError", err)
					case fail:
						_, err = ks.WriteAt(content(de.Offset, de.Remaining), de.Offset)
					}
					return err
				}()
			}()
			cs, err := ms.p.client.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(cs)
			if err != nil {
				t.Fatalf("read %d bytes, then %v", len(got), err)
			}
			if err := <-served; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, content(0, head+2*part)) {
				t.Fatalf("read %d bytes, want %d intact", len(got), head+2*part)
			}
		})
	}
}
