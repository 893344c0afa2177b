package kwik

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// A CancelWrite on a stream with a delegated range beyond the credit resets the stream, not
// the session, and the delegation's Wait returns instead of hanging.
func TestCancelWriteWithDelegation(t *testing.T) {
	const W = 64 << 10
	conf := &Config{StreamReceiveWindow: W, HeartbeatInterval: 100e6, PathTimeout: 600e6}
	release := make(chan struct{})
	ms := newMultiSource(t, 1, conf, func(st Stream, off, n int64) error { <-release; return nil })
	defer close(release)
	ctx := testContext(t)
	st, err := ms.p.server.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write(content(0, 1000))
	d, err := st.Delegate(ms.ids[0], 2*W, chunkRequest(1000, 2*W))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := ms.p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(cs, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	st.CancelWrite(7)
	var se *StreamError
	if _, err := io.ReadAll(cs); !errors.As(err, &se) || se.ErrorCode != 7 {
		t.Fatalf("client read %v, want the stream reset with 7", err)
	}
	var de *DelegationError
	if err := d.Wait(ctx); !errors.As(err, &de) {
		t.Fatalf("Wait: %v, want a DelegationError", err)
	}
	if ms.p.client.Context().Err() != nil {
		t.Fatalf("the session ended: %v", context.Cause(ms.p.client.Context()))
	}
}

// Write and a refilling WriteAt wait for credit at once: one grant must wake both.
func TestWriteAndWriteAtShareCredit(t *testing.T) {
	const W = 64 << 10
	conf := &Config{StreamReceiveWindow: W}
	p := newPair(t, conf, conf)
	ctx := testContext(t)
	sti, err := p.server.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := sti.(*stream)
	if _, err := st.Write(content(0, W)); err != nil {
		t.Fatal(err)
	}
	// As if [W, W+16K) had been delegated and failed whole.
	st.send.mu.Lock()
	st.send.offset += 16 << 10
	st.send.pending++
	st.send.mu.Unlock()
	st.delegationResolved(true, W, W+16<<10)
	errs := make(chan error, 2)
	go func() { _, err := st.Write(content(W+16<<10, 16<<10)); errs <- err }()
	go func() { _, err := st.WriteAt(content(W, 16<<10), W); errs <- err }()
	// Both now wait for credit; reading the first window grants it.
	waitWithin(t, 10*time.Second, "Write and WriteAt waiting for credit", func() bool {
		st.send.mu.Lock()
		defer st.send.mu.Unlock()
		return st.send.waiting == 2
	})
	cs, err := p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, W+32<<10)
	if _, err := io.ReadFull(cs, buf); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if string(buf) != string(content(0, W+32<<10)) {
		t.Fatal("stream corrupted")
	}
}

// A secondary that scatters tiny frames inside its own range costs only its path: the
// primary refills and the stream completes.
func TestSecondaryFragmentationCostsItsPath(t *testing.T) {
	ms := newMultiSource(t, 1, delegationConf, func(st Stream, off, n int64) error {
		ds := st.(*delegatedStream)
		rs, err := ds.p.pool.assign()
		if err != nil {
			return err
		}
		for i := int64(0); i < 2*maxRangesPerDelegation; i++ {
			// Right bytes, wrong shape: inside its range a secondary is trusted with the content.
			if err := rs.writeFrame(ds.streamID, uint64(off+1+2*i), content(off+1+2*i, 1), false); err != nil {
				return err
			}
		}
		return errors.New("sprayed")
	})
	failures := ms.download(t, 2<<20, 256<<10)
	if len(failures) == 0 {
		t.Fatal("no delegation failed")
	}
	<-ms.secs[0].Context().Done()
	if err := context.Cause(ms.secs[0].Context()); !errors.Is(err, ErrOffsetMismatch) {
		t.Fatalf("the secondary ended with %v, want KWIK_OFFSET_MISMATCH", err)
	}
	if ms.p.client.Context().Err() != nil {
		t.Fatal("the session ended")
	}
}

// Empty raw messages still count against MaxPendingRawData.
func TestRawEmptyMessagesBounded(t *testing.T) {
	conf := serverConf()
	conf.MaxPendingRawData = 64 << 10
	p := newPair(t, clientConf(), conf)
	const n = 5000
	sent := 0
	for sent < n {
		if err := p.client.SendRawData(nil, p.client.primary.id); err != nil {
			// The client's own relay queue is bounded too: let it drain.
			time.Sleep(time.Millisecond)
			continue
		}
		sent++
	}
	waitFor(t, func() bool {
		p.server.raw.mu.Lock()
		defer p.server.raw.mu.Unlock()
		return uint64(len(p.server.raw.queue))+p.server.raw.dropped == n
	})
	p.server.raw.mu.Lock()
	defer p.server.raw.mu.Unlock()
	if max := conf.MaxPendingRawData / rawEntryCost; len(p.server.raw.queue) > max {
		t.Fatalf("%d empty messages queued, bound %d", len(p.server.raw.queue), max)
	}
}

// A client that closes its session as soon as it has read a multi-source stream (the usual
// quic-go pattern) still tells the primary that every delegation completed: Close delivers
// the queued control frames first. Every round is a fresh session.
func TestCloseAfterReadCompletesDelegations(t *testing.T) {
	for round := range 8 {
		ms := newMultiSource(t, 1, delegationConf)
		ctx := testContext(t)
		size := int64(1 << 20)
		res := make(chan error, 1)
		go func() {
			st, err := ms.p.server.OpenStreamSync(ctx)
			if err != nil {
				res <- err
				return
			}
			// The secondary's range is the stream's last: its status comes last.
			if _, err := st.Write(content(0, size/2)); err != nil {
				res <- err
				return
			}
			d, err := st.Delegate(ms.ids[0], size/2, chunkRequest(size/2, size/2))
			if err != nil {
				res <- err
				return
			}
			st.Close()
			res <- d.Wait(ctx)
		}()
		cs, err := ms.p.client.AcceptStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(cs)
		if err != nil || int64(len(got)) != size {
			t.Fatalf("round %d: read %d bytes, %v", round, len(got), err)
		}
		ms.p.client.Close()
		if err := <-res; err != nil {
			t.Fatalf("round %d: the primary's Wait after the client's Close: %v", round, err)
		}
	}
}

// A secondary writing a delegated range beyond its credit learns that the range is not wanted
// any more, whether the client cancels reading or the primary resets the stream: its Write
// fails with the code (it used to wait for credit until its session ended).
func TestDelegationStoppedTellsSecondary(t *testing.T) {
	const W = 64 << 10
	for _, tc := range []struct {
		name string
		code StreamErrorCode
		stop func(primary, client Stream)
	}{
		{"client cancels reading", 9, func(_, client Stream) { client.CancelRead(9) }},
		{"primary resets", 5, func(primary, _ Stream) { primary.CancelWrite(5) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := &Config{StreamReceiveWindow: W, HeartbeatInterval: 100e6, PathTimeout: 600e6}
			started, writeErr := make(chan struct{}), make(chan error, 1)
			ms := newMultiSource(t, 1, conf, func(st Stream, off, n int64) error {
				close(started)
				_, err := st.Write(content(off, n))
				writeErr <- err
				return err
			})
			ctx := testContext(t)
			st, err := ms.p.server.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			st.Write(content(0, 1000))
			if _, err := st.Delegate(ms.ids[0], 8*W, chunkRequest(1000, 8*W)); err != nil {
				t.Fatal(err)
			}
			cs, err := ms.p.client.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(cs, make([]byte, 1000)); err != nil {
				t.Fatal(err)
			}
			// The secondary has the range (a range the client learns of only after it stopped
			// reading is refused at once, and never reaches the secondary).
			select {
			case <-started:
			case <-ctx.Done():
				t.Fatal("the secondary never got the range")
			}
			tc.stop(st, cs)
			var se *StreamError
			select {
			case err := <-writeErr:
				if !errors.As(err, &se) || se.ErrorCode != tc.code || !se.Remote {
					t.Fatalf("the secondary's Write returned %v, want a remote StreamError %d", err, tc.code)
				}
			case <-ctx.Done():
				t.Fatal("the secondary's Write still waits")
			}
			if ms.secs[0].Context().Err() != nil {
				t.Fatal("the secondary's session ended")
			}
		})
	}
}
