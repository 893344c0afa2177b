package kwik

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/netsim"
)

// Issue 12: no call blocks forever because of a delegation.

// smallWindowConf has a stream window small enough that an object of 8 windows stays quick
// to move; paths die fast. Everything else, the progress deadline included, is the default.
var smallWindowConf = &Config{StreamReceiveWindow: 512 << 10, HeartbeatInterval: 100e6, PathTimeout: 600e6}

// writeRefilling is the README's Write loop: a Write blocked behind a failed delegation
// returns its *DelegationError; the primary refills that range from its own copy and goes on.
func writeRefilling(st Stream, p []byte, refill func(error) error) error {
	for len(p) > 0 {
		n, err := st.Write(p)
		p = p[n:]
		if err != nil {
			if err := refill(err); err != nil {
				return err
			}
		}
	}
	return nil
}

// serveREADME serves content(0, size) on st as the README's "Multi-source streams" example
// does, one goroutine, no watcher: chunks alternate between the primary's own Writes and
// delegations to secondary; after Close it waits for every delegation and refills what they
// report missing. A delegation refused because the path is dead is written by the primary.
func serveREADME(ctx context.Context, st Stream, size, chunk int64, secondary string) ([]*DelegationError, error) {
	var failures []*DelegationError
	var refill func(error) error
	refill = func(err error) error {
		var de *DelegationError
		if !errors.As(err, &de) {
			return err
		}
		failures = append(failures, de)
		for {
			_, err := st.WriteAt(content(de.Offset, de.Remaining), de.Offset)
			if err == nil {
				return nil
			}
			if err := refill(err); err != nil { // blocked behind another failed range: that one first
				return err
			}
		}
	}
	var ds []*Delegation
	for i, off := 0, int64(0); off < size; i, off = i+1, off+chunk {
		n := min(chunk, size-off)
		if i%2 == 1 {
			d, err := st.Delegate(secondary, n, chunkRequest(off, n))
			if err == nil {
				ds = append(ds, d)
				continue
			}
			if !errors.Is(err, ErrPathDead) {
				return failures, err
			}
		}
		if err := writeRefilling(st, content(off, n), refill); err != nil {
			return failures, err
		}
	}
	if err := st.Close(); err != nil {
		return failures, err
	}
	for _, d := range ds {
		if err := d.Wait(ctx); err != nil {
			if err := refill(err); err != nil { // a second refill of a range is harmless
				return failures, err
			}
		}
	}
	return failures, nil
}

// readmeDownload has the primary serve size bytes with serveREADME to the client, which reads
// them all and checks them; it returns the primary's failures.
func readmeDownload(t *testing.T, ms *multiSource, size, chunk int64) []*DelegationError {
	t.Helper()
	ctx := testContext(t)
	type result struct {
		failures []*DelegationError
		err      error
	}
	res := make(chan result, 1)
	go func() {
		st, err := ms.p.server.OpenStreamSync(ctx)
		if err != nil {
			res <- result{err: err}
			return
		}
		f, err := serveREADME(ctx, st, size, chunk, ms.ids[0])
		if err != nil {
			st.CancelWrite(1) // the client's read fails now, and the test says why
		} else {
			// Every refill has returned: nothing is owed, and the send side completed.
			ks := st.(*stream)
			ks.send.mu.Lock()
			if ks.send.refill.Len() != 0 || ks.send.filling != 0 || ks.send.completion != sendComplete {
				err = fmt.Errorf("after the refills: %d ranges to refill, %d bytes being filled, completed %v",
					ks.send.refill.Len(), ks.send.filling, ks.send.completion == sendComplete)
			}
			ks.send.mu.Unlock()
		}
		res <- result{f, err}
	}()
	cs, err := ms.p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(cs)
	if err != nil {
		select {
		case r := <-res:
			t.Fatalf("client read %d bytes, then %v; the primary: %v", len(got), err, r.err)
		default:
		}
		t.Fatalf("client read %d bytes, then %v", len(got), err)
	}
	if !bytes.Equal(got, content(0, size)) {
		t.Fatalf("client got %d bytes, want %d intact", len(got), size)
	}
	r := <-res
	if r.err != nil {
		t.Fatalf("the primary's README loop: %v", r.err)
	}
	return r.failures
}

// link40 is the secondary's link in the scenario: 40 Mbit/s, 10 ms one way.
var link40 = netsim.Config{
	Up:   netsim.LinkConfig{Delay: 10 * time.Millisecond, RateBps: 40e6},
	Down: netsim.LinkConfig{Delay: 10 * time.Millisecond, RateBps: 40e6},
}

// The README's pattern with the secondary blackholed half way through its second range: the
// hole it leaves holds the client's window while the primary has more than a window of its
// own bytes still to write. The primary's blocked Write reports the failure, the primary
// refills, and the object (8 windows) arrives intact.
func TestREADMEPatternSecondaryBlackholed(t *testing.T) {
	const size, chunk = 8 * 512 << 10, 128 << 10
	var (
		once sync.Once
		ms   *multiSource
	)
	built := make(chan struct{}) // ms is set: the behaviour runs on the secondary's goroutines
	ms = newMultiSource(t, 1, smallWindowConf, func(st Stream, off, n int64) error {
		<-built
		half := n / 2
		if _, err := st.Write(content(off, half)); err != nil {
			return err
		}
		blackhole := false
		if off >= 2*chunk { // the first range goes through whole
			once.Do(func() { blackhole = true })
		}
		if blackhole {
			ms.relay[0].SetBlackhole(true)
		}
		_, err := st.Write(content(off+half, n-half))
		return err
	})
	close(built)
	if err := ms.relay[0].SetConfig(link40); err != nil {
		t.Fatal(err)
	}
	failures := readmeDownload(t, ms, size, chunk)
	if len(failures) == 0 {
		t.Fatal("no delegation failed")
	}
	for _, de := range failures {
		if de.PathID != ms.ids[0] || !errors.Is(de, ErrPathDead) {
			t.Fatalf("failure %+v (%v), want path %s dead", de, de.Err, ms.ids[0])
		}
	}
}

// The same with a hung secondary: it takes its ranges, reads their requests and never writes,
// while its path stays up. The progress deadline (the default) fails its ranges, the primary
// refills them, and the object arrives intact, the path still active.
func TestREADMEPatternSecondaryHung(t *testing.T) {
	const size, chunk = 8 * 512 << 10, 128 << 10
	release := make(chan struct{})
	defer close(release)
	ms := newMultiSource(t, 1, smallWindowConf, func(st Stream, off, n int64) error {
		<-release // hung: no Write, no Close, whatever the client says
		return errors.New("released")
	})
	if err := ms.relay[0].SetConfig(link40); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	failures := readmeDownload(t, ms, size, chunk)
	t.Logf("%d bytes in %v, %d delegations failed", size, time.Since(start).Round(time.Millisecond), len(failures))
	if len(failures) == 0 {
		t.Fatal("no delegation failed")
	}
	for _, de := range failures {
		if de.PathID != ms.ids[0] || !errors.Is(de, ErrDelegationTimeout) {
			t.Fatalf("failure %+v (%v), want path %s's progress deadline", de, de.Err, ms.ids[0])
		}
	}
	if _, ok := pathByID(ms.p.server.GetActivePaths(), ms.ids[0]); !ok {
		t.Fatal("the hung secondary's path is not active: the path's death, not the deadline, failed its ranges")
	}
}

// A secondary that hangs on one range while serving the others: only that range misses its
// deadline (its later ranges progress), the secondary is told to stop writing it, and the
// stream arrives intact.
func TestDelegationProgressDeadlineOneRange(t *testing.T) {
	// Ranges small next to the window: those after the hung one have credit and progress.
	const size, chunk = 2 << 20, 32 << 10
	release := make(chan struct{})
	defer close(release)
	stopped := make(chan error, 1)
	ms := newMultiSource(t, 1, smallWindowConf, func(st Stream, off, n int64) error {
		if off != chunk { // the first delegated range hangs, until told to stop
			_, err := st.Write(content(off, n))
			return err
		}
		select {
		case <-st.Context().Done():
			stopped <- context.Cause(st.Context())
		case <-release:
		}
		return errors.New("stopped")
	})
	failures := readmeDownload(t, ms, size, chunk)
	if len(failures) == 0 {
		t.Fatal("no delegation failed")
	}
	for _, de := range failures {
		if de.Offset != chunk || de.Remaining != chunk || !errors.Is(de, ErrDelegationTimeout) {
			t.Fatalf("failure %+v (%v), want the range at %d, whole, by its deadline", de, de.Err, chunk)
		}
	}
	select {
	case err := <-stopped:
		var se *StreamError
		if !errors.As(err, &se) || !se.Remote {
			t.Fatalf("the hung range ended with %v, want the client's STOP_SENDING", err)
		}
	case <-testContext(t).Done():
		t.Fatal("the secondary was never told to stop the hung range")
	}
	if ms.secs[0].Context().Err() != nil {
		t.Fatal("the secondary's session ended")
	}
}

// Wait, Write and WriteAt all return when the session closes while they wait because of a
// delegation: Write and a refilling WriteAt for credit the client will not give, Wait for a
// hung secondary's range. Whichever side closes, no goroutine is left (TestMain checks).
func TestDelegationCallsReturnOnClose(t *testing.T) {
	for _, side := range []string{"primary", "client"} {
		t.Run(side, func(t *testing.T) {
			const W = 64 << 10
			const R = 4 << 20 // beyond any credit the client gives
			conf := &Config{StreamReceiveWindow: W, HeartbeatInterval: 100e6, PathTimeout: 600e6}
			release := make(chan struct{})
			defer close(release)
			ms := newMultiSource(t, 1, conf, func(st Stream, off, n int64) error {
				if off == 1000 {
					return nil // closed short at once: the whole range fails, to refill
				}
				<-release // hung
				return errors.New("released")
			})
			ctx := testContext(t)
			sti, err := ms.p.server.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			st := sti.(*stream)
			if _, err := st.Write(content(0, 1000)); err != nil {
				t.Fatal(err)
			}
			d1, err := st.Delegate(ms.ids[0], R, chunkRequest(1000, R))
			if err != nil {
				t.Fatal(err)
			}
			var de *DelegationError
			if err := d1.Wait(ctx); !errors.As(err, &de) {
				t.Fatalf("Wait: %v, want the range written short", err)
			}
			d2, err := st.Delegate(ms.ids[0], R, chunkRequest(1000+R, R))
			if err != nil {
				t.Fatal(err)
			}
			errs := make(chan error, 3)
			go func() { _, err := st.WriteAt(content(de.Offset, de.Remaining), de.Offset); errs <- err }()
			go func() { _, err := st.Write(content(1000+2*R, 2*R)); errs <- err }()
			go func() { errs <- d2.Wait(context.Background()) }()
			// The client reads nothing: all three end up waiting.
			waitFor(t, func() bool {
				st.send.mu.Lock()
				defer st.send.mu.Unlock()
				return st.send.waiting == 2 && d2.claimed.Load()
			})
			if side == "primary" {
				ms.p.server.Close()
			} else {
				ms.p.client.Close()
			}
			for range 3 {
				select {
				case err := <-errs:
					if err == nil {
						t.Fatal("a call returned nil after the session closed")
					}
				case <-ctx.Done():
					t.Fatal("a call still waits after the session closed")
				}
			}
		})
	}
}

// Fanout with a hung secondary (it takes its ranges and never writes, while its path lives):
// its pieces come from the primary, sent again as overdue or refilled once their progress
// deadline failed them, and the stream arrives intact; Fanout returns.
func TestFanoutSecondaryHung(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	hung := func(Stream, int64, int64) error { <-release; return errors.New("released") }
	ms := newMultiSource(t, 2, delegationConf, nil, hung)
	ms.behaved = true
	resource := content(0, 8<<20)
	fr := fanoutDownload(t, ms, nil, resource, &FanoutOptions{ChunkSize: 128 << 10}, nil)
	if fr == nil {
		t.Fatal("Fanout failed")
	}
	if fr.Refilled+fr.Duplicated == 0 {
		t.Fatalf("the hung secondary's pieces were neither refilled nor sent again: %+v", fr)
	}
	for _, de := range fr.Failed {
		if de.PathID != ms.ids[1] || !errors.Is(de, ErrDelegationTimeout) {
			t.Fatalf("failure %+v (%v), want path %s's progress deadline", de, de.Err, ms.ids[1])
		}
	}
	if _, ok := pathByID(ms.p.server.GetActivePaths(), ms.ids[1]); !ok {
		t.Fatal("the hung secondary's path is not active")
	}
}
