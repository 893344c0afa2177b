package kwik

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// Ranges delegated to a path still joining (JoinPath) are held by the client until the join
// ends. Joined: the secondary serves all of them (three ranges held: it takes them in order,
// or it would cut the path off and they would fail). Refused: each fails with
// KWIK_PATH_DEAD, and the primary refills it. Never joined: once the reader has read
// everything (the primary sent the range's bytes again, as Fanout does for a late piece), the
// client reports the held range complete, and the primary's Wait returns while the join is
// still under way. Canceled: once the client abandons the stream, the held range is refused at
// once, the join still under way.
func TestDelegateWhileJoining(t *testing.T) {
	const head, part, tail = 64 << 10, 128 << 10, 64 << 10
	for _, tc := range []struct {
		name   string
		join   error // what the client's policy says once released
		settle bool  // the join never ends: the primary writes the range itself
		cancel bool  // (with settle) the client cancels reading instead, before the range
	}{
		{name: "joined"},
		{name: "refused", join: errors.New("refused by the test")},
		{name: "read before the join ends", settle: true},
		{name: "canceled before the join ends", settle: true, cancel: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			release := make(chan struct{})
			released := false
			releaseOnce := func() {
				if !released {
					released = true
					close(release)
				}
			}
			cconf := *delegationConf
			cconf.AllowPath = func(string) error {
				<-release
				if tc.settle {
					return errors.New("the test is over") // not a dial to a listener closed by then
				}
				return tc.join
			}
			sconf := *delegationConf
			sconf.JoinKey = testJoinKey
			p := newPair(t, &cconf, &sconf)
			t.Cleanup(releaseOnce) // before the session's Close, which waits for the join
			ln := listen(t, &sconf)
			go func() {
				s, err := ln.Accept(ctx)
				if err != nil {
					return
				}
				t.Cleanup(func() { s.Close() })
				serveSecondary(t, s.(*session), nil)
			}()

			id, result := p.server.JoinPath(ln.Addr().String())
			if id == "" {
				t.Fatalf("JoinPath: %v", <-result)
			}
			ranges := 3
			if tc.settle {
				ranges = 1
			}
			served := make(chan error, 1)
			go func() {
				served <- func() error {
					st, err := p.server.OpenStreamSync(ctx)
					if err != nil {
						return err
					}
					if _, err := st.Write(content(0, head)); err != nil {
						return err
					}
					var ds []*Delegation
					for i := range ranges {
						off := int64(head + i*part)
						d, err := st.Delegate(id, part, chunkRequest(off, part))
						if err != nil {
							return fmt.Errorf("delegating to a joining path: %v", err)
						}
						ds = append(ds, d)
					}
					if pi, ok := pathByID(p.server.GetAllPaths(), id); !ok || pi.Status != PathConnecting {
						return fmt.Errorf("the path is %v, want still connecting", pi.Status)
					}
					if tc.cancel {
						// The client abandons the stream: the held range is refused at once.
						var de *DelegationError
						if err := ds[0].Wait(ctx); !errors.As(err, &de) || de.Remaining != part {
							return fmt.Errorf("held range of a canceled stream: %v, want all of it missing", err)
						}
						if pi, _ := pathByID(p.server.GetAllPaths(), id); pi.Status != PathConnecting {
							return fmt.Errorf("the join ended (%v) before the held range was refused", pi.Status)
						}
						return nil
					}
					end := int64(head + ranges*part)
					if _, err := st.Write(content(end, tail)); err != nil {
						return err
					}
					if err := st.Close(); err != nil {
						return err
					}
					if tc.settle {
						// A spare copy, as Fanout sends one of a late secondary's pieces.
						if _, err := st.(*stream).duplicate(content(head, part), head); err != nil {
							return err
						}
					} else {
						releaseOnce()
					}
					for _, d := range ds {
						err := d.Wait(ctx)
						var de *DelegationError
						switch {
						case tc.join == nil && err != nil:
							return fmt.Errorf("delegation at %d: %v", d.Offset, err)
						case tc.join != nil && !errors.As(err, &de):
							return fmt.Errorf("delegation at %d: %v, want a *DelegationError", d.Offset, err)
						case tc.join != nil:
							if !errors.Is(err, ErrPathDead) {
								return fmt.Errorf("delegation at %d: %v, want KWIK_PATH_DEAD", d.Offset, err)
							}
							if _, err := st.WriteAt(content(de.Offset, de.Remaining), de.Offset); err != nil {
								return err
							}
						}
					}
					if tc.settle {
						if pi, _ := pathByID(p.server.GetAllPaths(), id); pi.Status != PathConnecting {
							return fmt.Errorf("the join ended (%v) before the held range settled", pi.Status)
						}
					}
					return nil
				}()
			}()
			cs, err := p.client.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.cancel {
				if _, err := io.ReadFull(cs, make([]byte, head)); err != nil {
					t.Fatal(err)
				}
				cs.CancelRead(0)
				if err := <-served; err != nil {
					t.Fatal(err)
				}
				return
			}
			got, err := io.ReadAll(cs)
			if err != nil {
				t.Fatalf("client read %d bytes, then %v", len(got), err)
			}
			if err := <-served; err != nil {
				t.Fatal(err)
			}
			size := int64(head + ranges*part + tail)
			if int64(len(got)) != size || string(got) != string(content(0, size)) {
				t.Fatalf("client got %d bytes, want %d intact", len(got), size)
			}
			if tc.settle {
				select {
				case err := <-result:
					t.Fatalf("the join ended (%v) while the client's policy held it", err)
				default:
				}
			} else if err := <-result; (err == nil) != (tc.join == nil) {
				t.Fatalf("JoinPath's result: %v, want an error: %v", err, tc.join != nil)
			}
			if tc.join == nil && !tc.settle {
				if ps := pathStats(p.client, id); ps.BytesReceived < uint64(ranges*part) {
					t.Fatalf("the client received %d bytes from the secondary, want its %d", ps.BytesReceived, ranges*part)
				}
			}
		})
	}
}

// JoinPath refuses what AddPath refuses, on its channel, with no path ID.
func TestJoinPathRefused(t *testing.T) {
	p := newPair(t, delegationConf, delegationConf) // no JoinKey
	id, result := p.server.JoinPath("127.0.0.1:1")
	if err := <-result; id != "" || !errors.Is(err, ErrNoJoinKey) {
		t.Fatalf("JoinPath without a join key: %q, %v; want no ID and ErrNoJoinKey", id, err)
	}
	if id, result := p.client.JoinPath("127.0.0.1:1"); id != "" || !errors.Is(<-result, ErrNotPrimary) {
		t.Fatal("JoinPath on the client: want no ID and ErrNotPrimary")
	}
}

// The ranges held for a path reach its secondary right behind the client's authentication,
// before the secondary has answered (a raw secondary, which reads them and only then answers),
// in the order they came; once it answers, the client takes the secondary's bytes for them.
func TestHeldRangesFollowTheAuthentication(t *testing.T) {
	ctx := testContext(t)
	const part = 64 << 10
	p, id, ql, release, st := joiningRaw(t, part)
	var ds []*Delegation
	for i := range int64(3) {
		d, err := st.Delegate(id, part, chunkRequest((i+1)*part, part))
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	cs, err := p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The client holds the three ranges (its reader waits at the first) until it joins.
	waitHeld(t, p.client, id, 3)
	release()
	h2, req := acceptRaw(t, ql)
	for i := range ds {
		a := h2.next(t, func(f *pb.ControlFrame) bool { return f.GetDelegationAssign() != nil }).GetDelegationAssign()
		if a.DelegationId != ds[i].id || a.Offset != uint64(ds[i].Offset) {
			t.Fatalf("assignment %d: %v, want delegation %d at %d", i, a, ds[i].id, ds[i].Offset)
		}
	}
	h2.send(authOK(req.SessionId, req.PathId))
	var pkts []byte
	for off := int64(part); off < 4*part; off += 16 << 10 { // within a message's size
		pkts = append(pkts, h2.packet(frame(cs.StreamID(), uint64(off), content(off, 16<<10), false))...)
	}
	h2.data(t, pkts)
	got, err := io.ReadAll(cs)
	if err != nil || string(got) != string(content(0, 4*part)) {
		t.Fatalf("client read %d bytes, intact %v, %v", len(got), string(got) == string(content(0, 4*part)), err)
	}
	for _, d := range ds {
		if err := d.Wait(ctx); err != nil {
			t.Errorf("delegation at %d: %v", d.Offset, err)
		}
	}
}

// A range handed to a joining secondary behind the client's authentication that can no longer
// be taken when the secondary answers (the reader canceled the stream meanwhile): the client
// reports the delegation failed to the primary and stops it at the secondary, which had it.
func TestPresentedRangeAbandonedBeforeTheAnswer(t *testing.T) {
	ctx := testContext(t)
	const part = 64 << 10
	p, id, ql, release, st := joiningRaw(t, part)
	d, err := st.Delegate(id, part, chunkRequest(part, part))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitHeld(t, p.client, id, 1)
	release()
	h2, req := acceptRaw(t, ql)
	a := h2.next(t, func(f *pb.ControlFrame) bool { return f.GetDelegationAssign() != nil }).GetDelegationAssign()
	if a.DelegationId != d.id {
		t.Fatalf("assignment %v, want delegation %d", a, d.id)
	}
	// Handed over, not yet recorded: the reader gives up on the stream, then the secondary
	// answers.
	cs.CancelRead(7)
	h2.send(authOK(req.SessionId, req.PathId))
	stop := h2.next(t, func(f *pb.ControlFrame) bool { return f.GetStopSending() != nil }).GetStopSending()
	if stop.LogicalStreamId != uint64(cs.StreamID()) || !slices.Contains(stop.DelegationIds, d.id) {
		t.Fatalf("the secondary was told %v, want to stop delegation %d of stream %d", stop, d.id, cs.StreamID())
	}
	if err := d.Wait(ctx); err == nil {
		t.Fatal("the primary's delegation succeeded; want it failed (the client could not take it)")
	}
}

// joiningRaw has a pair's primary join a raw secondary (listenRaw) as path id, which the
// client holds in its join (its AllowPath waits) until release is called, and open a stream
// whose first n bytes it writes itself.
func joiningRaw(t *testing.T, n int64) (p *pair, id string, ql *quic.Listener, release func(), st Stream) {
	t.Helper()
	gate := make(chan struct{})
	cconf := *delegationConf
	cconf.AllowPath = func(string) error { <-gate; return nil }
	sconf := *delegationConf
	sconf.JoinKey = testJoinKey
	p = newPair(t, &cconf, &sconf)
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	ql = listenRaw(t)
	if id, _ = p.server.JoinPath(ql.Addr().String()); id == "" {
		t.Fatal("JoinPath refused")
	}
	st, err := p.server.OpenStreamSync(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(content(0, n)); err != nil {
		t.Fatal(err)
	}
	return p, id, ql, release, st
}

// waitHeld waits until the client holds n ranges for path id, which is joining.
func waitHeld(t *testing.T, c *session, id string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c.held.mu.Lock()
		got := 0
		if h := c.held.byPath[id]; h != nil {
			got = len(h.ranges)
		}
		c.held.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client holds %d ranges for the joining path, want %d", got, n)
		}
	}
}
