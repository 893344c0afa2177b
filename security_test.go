package kwik

// Security properties of joins and delegated ranges. TestJoinRejectedToken already covers
// tokens replayed, expired, forged, minted for another session, outliving the TTL, missing,
// and a session ID in place of a token, each presented by the session's own client;
// TestJoinRejectedByKey a secondary with another key or none. The cases here present joins
// from other connections. Secondaries writing outside their ranges: TestDelegationOutsideRange
// (before the range), TestSecondaryOutOfPlaceFrames (a stream with no delegation), the
// delegation cases of TestHostileSecondaries (past the end, fin, beyond credit, another
// stream, after completion, more written than the range) and TestDelegationPastRangeEnd.
// Issue 13's trust boundaries (docs/PROTOCOL.md section 15), one test per attack, follow
// TestDelegationPastRangeEnd: listener roles, forged, replayed and excess delegations, tokens
// bound to their secondary and their issue time, per-session join state, rejoin token limits,
// zstd bombs, sealed orders, scanning through AddPath, and a flood of every kind; then stale
// replicas (finding 8): content digests of delegated ranges, from TestStaleReplicaSameSizeIsRefilled
// on (malformed digests from a primary: TestHostilePrimaries).

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kwik-go/kwik/internal/jointoken"
	"github.com/kwik-go/kwik/internal/wire"
	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// rawJoin presents a join to the listener at addr from a new connection, as any client could,
// and returns whether it was accepted; a refusal must be KWIK_AUTH_FAILED, in the answer and in
// how the listener closed the connection.
func rawJoin(t *testing.T, addr string, sessionID, pathID string, token []byte) bool {
	t.Helper()
	return rawJoinAs(t, addr, addr, sessionID, pathID, token)
}

// rawJoinAs is rawJoin naming target as the address the primary asked the client to join.
func rawJoinAs(t *testing.T, addr, target string, sessionID, pathID string, token []byte) bool {
	t.Helper()
	h := dialRaw(t, addr)
	h.openControl(t)
	h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{
		Version: protocolVersion, SessionId: sessionID, PathId: pathID, Credentials: token, TargetAddress: target,
	}}})
	// The listener closes a refused join right after answering, and QUIC may drop the answer
	// with the connection: the close, which carries the same code, is what must be there.
	if f, err := readFrame(h.r); err == nil {
		resp := f.GetAuthenticationResponse()
		if resp.GetSuccess() {
			return true
		}
		if resp.GetErrorCode() != pb.ErrorCode(CodeAuthFailed) {
			t.Fatalf("join refused with %v, want KWIK_AUTH_FAILED", resp)
		}
	}
	if err := h.closedWith(t); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("the listener closed the refused join with %v, want KWIK_AUTH_FAILED", err)
	}
	return false
}

// joinWith has client s join the secondary behind ln as pathID with token, as if its
// primary had asked it to.
func joinWith(t *testing.T, s *session, ln *Listener, pathID string, token []byte) error {
	rec := &pathRecord{id: pathID, address: ln.Addr().String(), status: PathConnecting, createdAt: time.Now()}
	if err := s.runOnLoop(func() {
		s.paths.records = append(s.paths.records, rec)
		s.paths.byID[pathID] = rec
	}); err != nil {
		return err
	}
	return s.dialSecondary(testContext(t), rec, token, PathConnecting)
}

// issue mints a token as a primary would, for the secondary the client reaches at target.
func issue(t *testing.T, key []byte, sessionID, pathID, target string, ttl time.Duration) []byte {
	now := time.Now()
	tok, err := jointoken.Issue(key, sessionID, pathID, target, now, now.Add(ttl))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A client cannot join another client's session: not by naming it, not with its own tokens,
// not with the other's token, whose single use the other has already made.
func TestJoinAnotherClientsSession(t *testing.T) {
	ln := listen(t, serverConf())
	a, aPrimary := dialListener(t, ln, clientConf())
	b, _ := dialListener(t, ln, clientConf())
	sec := listen(t, serverConf())

	pathA := randomID(8)
	tokA := issue(t, testJoinKey, a.ID(), pathA, sec.Addr().String(), 10*time.Second)
	if err := joinWith(t, a, sec, pathA, tokA); err != nil {
		t.Fatalf("A's own join: %v", err)
	}
	secA, err := sec.Accept(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	defer secA.Close()

	pathB, otherA := randomID(8), randomID(8)
	for _, tc := range []struct {
		name              string
		addr              string
		sessionID, pathID string
		token             []byte
	}{
		{"A's session ID alone", sec.Addr().String(), a.ID(), randomID(8), nil},
		{"A's session ID in place of a token", sec.Addr().String(), a.ID(), randomID(8), []byte(a.ID())},
		{"A's session ID with B's own token", sec.Addr().String(), a.ID(), pathB, issue(t, testJoinKey, b.ID(), pathB, sec.Addr().String(), 10*time.Second)},
		{"B's session ID with a token for A", sec.Addr().String(), b.ID(), otherA, issue(t, testJoinKey, a.ID(), otherA, sec.Addr().String(), 10*time.Second)},
		{"A's token, replayed from another connection", sec.Addr().String(), a.ID(), pathA, tokA},
		{"A's token, for another of A's paths", sec.Addr().String(), a.ID(), otherA, tokA},
		{"A's session ID at A's primary", ln.Addr().String(), a.ID(), randomID(8), nil},
		{"A's session ID at A's primary, with B's token", ln.Addr().String(), a.ID(), pathB, issue(t, testJoinKey, b.ID(), pathB, sec.Addr().String(), 10*time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if rawJoin(t, tc.addr, tc.sessionID, tc.pathID, tc.token) {
				t.Fatal("join accepted")
			}
		})
	}
	noSession(t, sec)
	for name, s := range map[string]*session{"A": a, "A's primary": aPrimary, "B": b, "A's secondary": secA.(*session)} {
		if s.Context().Err() != nil {
			t.Fatalf("%s ended: %v", name, context.Cause(s.Context()))
		}
	}
	if _, ok := pathByID(a.GetActivePaths(), pathA); !ok {
		t.Fatal("A's own path is no longer active")
	}
}

// Tokens altered, minted for another path, or replayed after the session they opened has
// closed, are refused, whoever presents them.
func TestJoinTokenMisuse(t *testing.T) {
	p := newPair(t, clientConf(), serverConf())
	sec := listen(t, serverConf())
	sid := p.client.ID()

	used, usedPath := issue(t, testJoinKey, sid, "00000000000000aa", sec.Addr().String(), 10*time.Second), "00000000000000aa"
	if !rawJoin(t, sec.Addr().String(), sid, usedPath, used) {
		t.Fatal("valid join refused")
	}
	s, err := sec.Accept(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close() // the token stays used after the session it opened is gone

	valid := issue(t, testJoinKey, sid, "00000000000000bb", sec.Addr().String(), 10*time.Second)
	withExpiry := func(tok []byte, d time.Duration) []byte {
		out := bytes.Clone(tok)
		binary.BigEndian.PutUint64(out[8:], uint64(time.Now().Add(d).UnixNano())) // the expiry follows the issue time
		return out
	}
	for _, tc := range []struct {
		name              string
		sessionID, pathID string
		token             []byte
	}{
		{"replayed after its session closed", sid, usedPath, used},
		{"minted for another path", sid, "00000000000000cc", valid},
		{"expiry extended", sid, "00000000000000bb", withExpiry(valid, time.Minute)},
		{"expiry moved into the past", sid, "00000000000000bb", withExpiry(valid, -time.Minute)},
		{"truncated", sid, "00000000000000bb", valid[:len(valid)-1]},
		{"a byte appended", sid, "00000000000000bb", append(bytes.Clone(valid), 0)},
		{"signed with another key", sid, "00000000000000dd", issue(t, []byte("another key"), sid, "00000000000000dd", sec.Addr().String(), 10*time.Second)},
		{"for a malformed session ID", "not a session ID", "00000000000000ee", issue(t, testJoinKey, "not a session ID", "00000000000000ee", sec.Addr().String(), 10*time.Second)},
		{"for a malformed path ID", sid, "path", issue(t, testJoinKey, sid, "path", sec.Addr().String(), 10*time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if rawJoin(t, sec.Addr().String(), tc.sessionID, tc.pathID, tc.token) {
				t.Fatal("join accepted")
			}
		})
	}
	noSession(t, sec)
	// The token the misuse was built from still works, once, for its own path: refusals
	// did not consume it.
	if !rawJoin(t, sec.Addr().String(), sid, "00000000000000bb", valid) {
		t.Fatal("valid join refused")
	}
	s, err = sec.Accept(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// A secondary whose last frame runs one byte past its range loses that whole frame: the
// client cuts the path off, the primary refills the range from the last byte that landed,
// and the client reads the stream byte-exact.
func TestDelegationPastRangeEnd(t *testing.T) {
	const tail = 100 // the in-range part of the frame that runs past the end
	ms := newMultiSource(t, 2, delegationConf, nil, func(st Stream, off, n int64) error {
		if _, err := st.Write(content(off, n-tail)); err != nil {
			return err
		}
		// On the real stream Write used, so that the frame arrives after the bytes before it.
		ds := st.(*delegatedStream)
		ds.send.mu.Lock()
		rs := ds.send.rs
		ds.send.mu.Unlock()
		return rs.writeFrame(ds.streamID, uint64(off+n-tail), content(off+n-tail, tail+1), false)
	})
	failures := ms.download(t, 4<<20, 256<<10)
	if len(failures) == 0 {
		t.Fatal("no delegation failed")
	}
	// The range whose frame straddled its end misses exactly that frame's bytes; other ranges
	// of the path that were in flight miss what had not arrived when it was cut off.
	straddled := false
	for _, de := range failures {
		if de.PathID != ms.ids[1] {
			t.Fatalf("failure %+v, want only path %s's", de, ms.ids[1])
		}
		straddled = straddled || de.Remaining == tail
	}
	if !straddled {
		t.Fatalf("no range missing exactly its last %d bytes: %v", tail, failures)
	}
	<-ms.secs[1].Context().Done()
	if err := context.Cause(ms.secs[1].Context()); !errors.Is(err, ErrOffsetMismatch) {
		t.Fatalf("the intruding secondary ended with %v, want KWIK_OFFSET_MISMATCH", err)
	}
	if ms.p.client.Context().Err() != nil {
		t.Fatal("the session ended")
	}
}

// ---- issue 13: trust boundaries ----

// A secondary-only listener opens no session for a client that dials it (finding 1: anyone
// could read a replica past its primary), and a primary-only one takes no join, even with a
// genuine token.
func TestListenerRolesRefuseOtherSessions(t *testing.T) {
	sec := listen(t, secondaryOnlyConf())
	_, err := Dial(testContext(t), sec.Addr().String(), testTLS.client, clientConf())
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("a client opened a session with a secondary-only listener: %v", err)
	}
	pconf := serverConf()
	pconf.ListenerRole = ListenPrimary
	prim := listen(t, pconf)
	c, _ := dialListener(t, prim, clientConf()) // a primary-only listener serves clients
	addr := prim.Addr().String()
	if rawJoin(t, addr, c.ID(), "00000000000000a1", issue(t, testJoinKey, c.ID(), "00000000000000a1", addr, 10*time.Second)) {
		t.Fatal("a primary-only listener took a join")
	}
	noSession(t, sec)
	noSession(t, prim)
	// And the secondary still takes genuine joins.
	if _, s := joinRaw(t, sec, randomID(16), randomID(8)); s.Role() != RoleSecondary {
		t.Fatalf("joined as %v", s.Role())
	}
	if _, err := Listen("127.0.0.1:0", testTLS.server, &Config{ListenerRole: ListenSecondary}); err == nil {
		t.Fatal("a secondary-only listener without a join key")
	}
}

// A client cannot make a secondary act on a delegation the primary did not sign (findings 2
// and 3): no MAC, another key's, a genuine one with the request, range or stream changed, one
// made for another path. Each ends the client's path at once with KWIK_AUTH_FAILED, before
// anything is surfaced or held.
func TestForgedDelegationEndsThePath(t *testing.T) {
	ln := listen(t, secondaryOnlyConf())
	genuine := func(sid, pid string) *pb.DelegationAssign {
		return signedAssign(sid, pid, 7, 1, 1000, 500, []byte("file=a range=1"))
	}
	for _, tc := range []struct {
		name   string
		forge  func(sid, pid string) *pb.DelegationAssign
		reason string
	}{
		{"no MAC", func(sid, pid string) *pb.DelegationAssign {
			m := genuine(sid, pid)
			m.Auth = nil
			return m
		}, ""},
		{"another key's MAC", func(sid, pid string) *pb.DelegationAssign {
			m := genuine(sid, pid)
			m.Auth = delegationMAC(delegationKey([]byte("another key")), sid, pid, m.DelegationId, m.LogicalStreamId, m.Offset, m.Length, m.Request, m.Expiry)
			return m
		}, ""},
		{"request changed", func(sid, pid string) *pb.DelegationAssign {
			m := genuine(sid, pid)
			m.Request = []byte("file=secret range=1")
			return m
		}, ""},
		{"offset changed", func(sid, pid string) *pb.DelegationAssign { m := genuine(sid, pid); m.Offset++; return m }, ""},
		{"length changed", func(sid, pid string) *pb.DelegationAssign { m := genuine(sid, pid); m.Length *= 1000; return m }, ""},
		{"stream changed", func(sid, pid string) *pb.DelegationAssign { m := genuine(sid, pid); m.LogicalStreamId += 2; return m }, ""},
		{"expiry extended", func(sid, pid string) *pb.DelegationAssign { m := genuine(sid, pid); m.Expiry += 1e12; return m }, ""},
		{"another path's", func(sid, pid string) *pb.DelegationAssign { return genuine(sid, randomID(8)) }, ""},
		{"another session's", func(sid, pid string) *pb.DelegationAssign { return genuine(randomID(16), pid) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sid, pid := randomID(16), randomID(8)
			h, s := joinRaw(t, ln, sid, pid)
			h.send(assignFrame(tc.forge(sid, pid)))
			if err := endedWith(t, s); !detected(err, ErrAuthFailed) {
				t.Fatalf("the secondary ended with %v, want KWIK_AUTH_FAILED", err)
			}
			if err := h.closedWith(t); !errors.Is(err, ErrAuthFailed) {
				t.Fatalf("the client's path closed with %v", err)
			}
			if _, err := s.AcceptStream(boundContext(t)); err == nil {
				t.Fatal("the forged delegation surfaced")
			}
		})
	}
	// The genuine assignment surfaces, with credit no further than its range.
	sid, pid := randomID(16), randomID(8)
	h, s := joinRaw(t, ln, sid, pid)
	m := genuine(sid, pid)
	m.MaxOffset = 1 << 60
	h.send(assignFrame(m))
	st, err := s.AcceptStream(boundContext(t))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := io.ReadAll(st)
	if string(req) != "file=a range=1" {
		t.Fatalf("request %q", req)
	}
	h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_MaxStreamData{MaxStreamData: &pb.MaxStreamData{LogicalStreamId: 1, Maximum: 1 << 61}}})
	// Raw data after it: once the secondary delivers it, the credit was handled.
	h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_RawPacketTransmission{RawPacketTransmission: &pb.RawPacketTransmission{Data: []byte("sync")}}})
	if _, err := s.ReceiveRawData(boundContext(t)); err != nil {
		t.Fatal(err)
	}
	ds := st.(*delegatedStream)
	ds.send.mu.Lock()
	credit := ds.send.maxOffset
	ds.send.mu.Unlock()
	if credit != 1500 {
		t.Fatalf("credit %d, want the range's end 1500", credit)
	}
}

// A client cannot replay a genuine delegation to have a secondary serve a range twice (or
// more): not on the same path, nor in a later join of the path (finding 3: duplicates).
func TestReplayedDelegationEndsThePath(t *testing.T) {
	ln := listen(t, secondaryOnlyConf())
	sid, pid := randomID(16), randomID(8)
	h, s := joinRaw(t, ln, sid, pid)
	first, second := signedAssign(sid, pid, 3, 1, 0, 100, nil), signedAssign(sid, pid, 4, 1, 100, 100, nil)
	h.send(assignFrame(first), assignFrame(second))
	for range 2 {
		st, err := s.AcceptStream(boundContext(t))
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
	h.send(assignFrame(first))
	if err := endedWith(t, s); !detected(err, ErrInvalidFrame) {
		t.Fatalf("replay on the same path: the secondary ended with %v, want KWIK_INVALID_FRAME", err)
	}
	// The client rejoins the path with a fresh token from its primary, and replays there.
	h2, s2 := joinRaw(t, ln, sid, pid)
	h2.send(assignFrame(second))
	if err := endedWith(t, s2); !detected(err, ErrInvalidFrame) {
		t.Fatalf("replay into a rejoin: the secondary ended with %v, want KWIK_INVALID_FRAME", err)
	}
}

// A secondary takes each delegation ID once, in any order within delegationWindow below the
// highest it took (the primary's delegations reach it in any order, PROTOCOL.md §14), and
// cannot tell one below the window: it refuses that one without ending the path.
func TestDelegationWindow(t *testing.T) {
	const base = 10000
	e := &joinEntry{g: newJoinGuard()}
	for i, c := range []struct {
		id   uint64
		want delegationTake
	}{
		{base, delegationTaken},
		{base - 2, delegationTaken}, // behind, not seen
		{base, delegationReplayed},
		{base - 1, delegationTaken},
		{base - 2, delegationReplayed},
		{base - 70, delegationTaken}, // in the bitmap's second word
		{base + 10, delegationTaken}, // the window moves up by 10: base-70 is now 80 behind
		{base - 70, delegationReplayed},
		{base - 69, delegationTaken},
		{base - 1, delegationReplayed},
		{base + 75, delegationTaken}, // across a word again
		{base - 70, delegationReplayed},
		{base, delegationReplayed},
		{base + 75 - delegationWindow + 1, delegationTaken}, // the window's last ID
		{base + 75 - delegationWindow, delegationTooOld},
		{base + 3*delegationWindow, delegationTaken}, // a jump past the whole window
		{base + 75, delegationTooOld},
		{base + 3*delegationWindow - 1, delegationTaken},
		{base + 3*delegationWindow, delegationReplayed},
	} {
		if got := e.takeDelegation(c.id, 0); got != c.want {
			t.Fatalf("step %d: ID %d: %d, want %d", i, c.id, got, c.want)
		}
	}
}

// Through a real secondary: delegations that come out of the order of their IDs are all
// served, a replay of one of them still ends the path, and one below the window is refused
// (DelegationDone with nothing written, for the primary to refill) without ending it.
func TestDelegationsInAnyOrder(t *testing.T) {
	ln := listen(t, secondaryOnlyConf())
	sid, pid := randomID(16), randomID(8)
	h, s := joinRaw(t, ln, sid, pid)
	const high = 3 * delegationWindow
	h.send(assignFrame(signedAssign(sid, pid, high, 1, 0, 100, nil)),
		assignFrame(signedAssign(sid, pid, high-2, 1, 100, 100, nil)),
		assignFrame(signedAssign(sid, pid, high-1, 1, 200, 100, nil)))
	for range 3 {
		st, err := s.AcceptStream(boundContext(t))
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
	h.send(assignFrame(signedAssign(sid, pid, high-delegationWindow, 1, 300, 100, nil)))
	f := h.next(t, func(f *pb.ControlFrame) bool {
		d := f.GetDelegationDone()
		return d != nil && d.DelegationId == high-delegationWindow
	})
	if w := f.GetDelegationDone().Written; w != 0 {
		t.Fatalf("a delegation below the window: %d bytes written, want none", w)
	}
	if err := s.Context().Err(); err != nil {
		t.Fatalf("a delegation below the window ended the path: %v", context.Cause(s.Context()))
	}
	h.send(assignFrame(signedAssign(sid, pid, high-2, 1, 100, 100, nil)))
	if err := endedWith(t, s); !detected(err, ErrInvalidFrame) {
		t.Fatalf("a replay behind the highest ID: the secondary ended with %v, want KWIK_INVALID_FRAME", err)
	}
}

// However many delegations arrive, genuine ones included, a secondary session holds at most
// maxSecondaryDelegations of them (finding 2: 22,000 frames took a secondary to 1.3 GiB); one
// more ends the path with KWIK_INVALID_FRAME. Its primary never sends that many.
func TestDelegationCapIsAViolation(t *testing.T) {
	ln := listen(t, secondaryOnlyConf())
	sid, pid := randomID(16), randomID(8)
	h, s := joinRaw(t, ln, sid, pid)
	var b []byte
	for i := range maxSecondaryDelegations + 1 {
		b = append(b, frames(assignFrame(signedAssign(sid, pid, uint64(i), 1, uint64(i)*10, 10, nil)))...)
	}
	h.write(b)
	if err := endedWith(t, s); !detected(err, ErrInvalidFrame) {
		t.Fatalf("the secondary ended with %v, want KWIK_INVALID_FRAME", err)
	}
	s.secondary.mu.Lock()
	held := s.secondary.held
	s.secondary.mu.Unlock()
	if held != maxSecondaryDelegations {
		t.Fatalf("held %d delegations, want the cap %d", held, maxSecondaryDelegations)
	}
	// The primary's side of the bound: Delegate refuses the delegation past it.
	var d primaryDelegations
	d.outstanding = make(map[string]outstanding)
	for range maxSecondaryDelegations {
		if err := d.reserve("p", 16); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.reserve("p", 16); err == nil {
		t.Fatal("the primary delegates past what the secondary holds")
	}
	d.release("p", 16)
	if err := d.reserve("p", 16); err != nil {
		t.Fatalf("after one resolved: %v", err)
	}
}

// A join token is bound to the secondary it was issued for (finding 4): a secondary that
// knows its addresses refuses a token for another, whatever address the client claims; a
// primary-only listener refuses every join.
func TestJoinTokenBoundToItsSecondary(t *testing.T) {
	// Each knows itself by its own address (a relay's, say, in a deployment; its own here,
	// which counts whatever the list).
	confA, confB := secondaryOnlyConf(), secondaryOnlyConf()
	confA.JoinAddresses = []string{"relay-a.example:443"}
	confB.JoinAddresses = []string{"relay-b.example:443"}
	a, b := listen(t, confA), listen(t, confB)
	sid := randomID(16)
	forA := issue(t, testJoinKey, sid, "00000000000000a2", a.Addr().String(), 10*time.Second)
	// At B, naming A's address (the MAC verifies, the address is not B's), or B's (the MAC
	// does not verify).
	for _, target := range []string{a.Addr().String(), b.Addr().String()} {
		h := dialRaw(t, b.Addr().String())
		h.openControl(t)
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{
			Version: protocolVersion, SessionId: sid, PathId: "00000000000000a2", Credentials: forA, TargetAddress: target,
		}}})
		if err := h.closedWith(t); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("B took A's token naming %s: %v", target, err)
		}
	}
	noSession(t, b)
	if !rawJoin(t, a.Addr().String(), sid, "00000000000000a2", forA) {
		t.Fatal("A refused its own token")
	}
}

// A token issued before a secondary started is refused (finding 4: the replay cache was lost
// with a restart, so used tokens replayed).
func TestJoinTokenFromBeforeRestartRefused(t *testing.T) {
	conf := secondaryOnlyConf()
	ln := listen(t, conf)
	addr := ln.Addr().String()
	sid := randomID(16)
	tok := issue(t, testJoinKey, sid, "00000000000000a3", addr, 10*time.Second)
	if !rawJoin(t, addr, sid, "00000000000000a3", tok) {
		t.Fatal("genuine join refused")
	}
	s, err := ln.Accept(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The secondary restarts (a new process: here a new listener, on another port, that the
	// client reaches under the same address through a relay or a NAT).
	restarted := listen(t, conf)
	raddr := restarted.Addr().String()
	if rawJoinAs(t, raddr, addr, sid, "00000000000000a3", tok) {
		t.Fatal("a token used before the restart was taken again")
	}
	noSession(t, restarted)
	// A token issued since works.
	if !rawJoinAs(t, raddr, addr, sid, "00000000000000a3", issue(t, testJoinKey, sid, "00000000000000a3", addr, 10*time.Second)) {
		t.Fatal("a fresh token refused after the restart")
	}
	s, err = restarted.Accept(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// Join state is kept per session and path (finding 4: 65,536 live tokens filled one cache and
// honest joins failed): one session's joins fill its own quota, not the listener's.
func TestJoinStateBoundedPerSession(t *testing.T) {
	ln := listen(t, secondaryOnlyConf())
	g := ln.joins
	now := time.Now()
	tok := func() jointoken.Token { return jointoken.Token{Issued: now, Expiry: now.Add(10 * time.Second)} }
	hog := randomID(16)
	for i := range joinGuardMaxPerSession {
		e, err := g.use(hog, fmt.Sprintf("%016x", i), tok(), now)
		if err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
		e.release()
	}
	if _, err := g.use(hog, "ffffffffffffffff", tok(), now); err == nil {
		t.Fatal("one session kept join state past its quota")
	}
	// Another session joins over the real network.
	if _, s := joinRaw(t, ln, randomID(16), randomID(8)); s.Context().Err() != nil {
		t.Fatal("the honest join's session ended")
	}
	// Once the hog's tokens expired, its quota is free again.
	if _, err := g.use(hog, "ffffffffffffffff", tok(), now.Add(time.Minute)); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
}

// A client that declares its path dead over and over gets a bounded number of rejoin tokens,
// spaced by a growing wait (finding 4: 2,000 tokens in 8 ms).
func TestRejoinTokensLimited(t *testing.T) {
	p := newPair(t, clientConf(), serverConf())
	sec := listen(t, secondaryOnlyConf())
	pathID, _ := addPath(t, p.server, sec, sec.Addr().String())
	given := 0
	ask := func() bool {
		ch := make(chan *pb.PathTokenResponse, 1)
		if err := p.client.runOnLoop(func() { p.client.paths.tokens[pathID] = ch }); err != nil {
			t.Fatal(err)
		}
		p.client.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_PathTokenRequest{PathTokenRequest: &pb.PathTokenRequest{PathId: pathID}}})
		select {
		case r := <-ch:
			if len(r.JoinToken) > 0 {
				given++
				return true
			}
			return false
		case <-boundContext(t).Done():
			t.Fatal("no answer")
		}
		return false
	}
	status := func(st pb.PathStatus) {
		p.client.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_PathStatusNotification{PathStatusNotification: &pb.PathStatusNotification{PathId: pathID, Status: st}}})
	}
	status(pb.PathStatus_DEAD)
	if !ask() {
		t.Fatal("no token for the first rejoin after a death")
	}
	for range 50 { // at once: the backoff refuses them
		ask()
	}
	if given != 1 {
		t.Fatalf("%d tokens at once after one death, want 1", given)
	}
	// Death after death (each announced, then a rejoin claimed), a token each, up to the
	// path's total.
	for range 2 * tokensPerPath {
		status(pb.PathStatus_ACTIVE)
		status(pb.PathStatus_DEAD)
		ask()
	}
	if given != tokensPerPath {
		t.Fatalf("%d tokens in all, want %d", given, tokensPerPath)
	}
}

// A zstd frame decodes to at most the receiver's own message limit, and nothing is allocated
// for more (finding 7: 518 bytes became 16 MiB; 134 KB sent made a primary allocate 21 GiB):
// a frame must state its content size, within the limit, and decoding stops at that size.
func TestZstdBombBoundedByOwnLimit(t *testing.T) {
	const limit = 64 << 10
	big := make([]byte, 8<<20)
	withSize := zstdEncoder().EncodeAll(big, nil)
	// The same frame claiming a content size within the limit: its blocks decode to more.
	var h zstd.Header
	if err := h.Decode(withSize); err != nil || !h.HasFCS {
		t.Fatalf("header %+v: %v", h, err)
	}
	lying := bytes.Clone(withSize)
	fcs := lying[h.HeaderSize-4 : h.HeaderSize] // 4 bytes for a size of 8 MiB
	if binary.LittleEndian.Uint32(fcs) != uint32(len(big)) {
		t.Fatalf("content size field not where expected: %x", fcs)
	}
	binary.LittleEndian.PutUint32(fcs, limit-1)
	// A stream frame, which states no content size.
	var stream bytes.Buffer
	w, _ := zstd.NewWriter(&stream, zstd.WithEncoderLevel(zstd.SpeedFastest))
	w.Write(big)
	w.Close()
	for name, z := range map[string][]byte{"content size above the limit": withSize, "content size understated": lying, "no content size": stream.Bytes()} {
		t.Run(name, func(t *testing.T) {
			var ms0, ms1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms0)
			_, err := decompress(z, nil, limit, new(wire.DataPacket))
			runtime.ReadMemStats(&ms1)
			if !errors.Is(err, ErrInvalidFrame) {
				t.Fatalf("decompress: %v, want KWIK_INVALID_FRAME", err)
			}
			// The decoder's own state aside (allocated once per process, and not per frame),
			// what one frame costs stays within a few times the limit.
			if got := ms1.TotalAlloc - ms0.TotalAlloc; got > 4*limit+(1<<20) {
				t.Fatalf("decompressing allocated %d bytes for a limit of %d", got, limit)
			}
		})
	}
	// A genuine packet within the limit decodes.
	plain := wire.AppendDataPacket(nil, &wire.DataPacket{Frames: []wire.DataFrame{{StreamID: 1, Data: bytes.Repeat([]byte("a log line\n"), limit/24)}}})
	var into wire.DataPacket
	if _, err := decompress(zstdEncoder().EncodeAll(plain, nil), nil, limit, &into); err != nil || len(into.Frames) != 1 {
		t.Fatalf("genuine packet: %v", err)
	}
}

// Raw data between servers is what the client says it is (finding 5: the client reads every
// relayed message and can claim any From); orders sealed with SendOrder are not: the client
// cannot read them, forge one (even claiming the primary's path), replay one, or redirect one
// to another secondary.
func TestOrdersAuthenticatedEndToEnd(t *testing.T) {
	p := newPair(t, clientConf(), serverConf())
	s1ln, s2ln := listen(t, serverConf()), listen(t, serverConf())
	id1, sec1 := addPath(t, p.server, s1ln, s1ln.Addr().String())
	id2, sec2 := addPath(t, p.server, s2ln, s2ln.Addr().String())
	ctx := boundContext(t)
	receive := func(s *session) RawData {
		t.Helper()
		rd, err := s.ReceiveRawData(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return rd
	}
	secret := []byte("prepare object=payroll.db")
	if err := SendOrder(p.server, secret, id1); err != nil {
		t.Fatal(err)
	}
	sealed := receive(sec1)
	if bytes.Contains(sealed.Data, secret) {
		t.Fatal("the order travels in clear through the client")
	}
	got, err := OpenOrder(sec1, sealed)
	if err != nil || !bytes.Equal(got.Data, secret) || got.From != p.server.primary.id {
		t.Fatalf("genuine order: %q from %s, %v", got.Data, got.From, err)
	}
	// The client, which relayed it, replays it; sends it to the other secondary; makes up one
	// claiming the primary's path; alters one.
	if err := p.client.SendRawData(sealed.Data, id1); err != nil {
		t.Fatal(err)
	}
	if err := p.client.SendRawData(sealed.Data, id2); err != nil {
		t.Fatal(err)
	}
	altered := bytes.Clone(sealed.Data)
	altered[len(altered)-1] ^= 1
	if err := p.client.SendRawData(altered, id1); err != nil {
		t.Fatal(err)
	}
	forged := append([]byte{orderVersion, byte(len(p.server.primary.id))}, p.server.primary.id...)
	forged = append(forged, make([]byte, 8+12+16)...)
	forged = append(forged, secret...)
	if err := p.client.SendRawData(forged, id1); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		s    *session
		what string
	}{{sec1, "replayed"}, {sec2, "redirected"}, {sec1, "altered"}, {sec1, "forged"}} {
		rd := receive(c.s)
		if _, err := OpenOrder(c.s, rd); !errors.Is(err, ErrOrderRejected) {
			t.Fatalf("%s order opened: %v", c.what, err)
		}
	}
	// Orders flow back too, and the true sender is known whatever the client says.
	if err := SendOrder(sec2, []byte("ready"), p.server.primary.id); err != nil {
		t.Fatal(err)
	}
	back, err := OpenOrder(p.server, receive(p.server))
	if err != nil || string(back.Data) != "ready" || back.From != id2 {
		t.Fatalf("answer %q from %s: %v", back.Data, back.From, err)
	}
}

// floodBounds are the documented costs of a flood (docs/PROTOCOL.md section 15). Both ends of
// every attacking connection run in this test's process, so the bounds cover the attacker's
// side too: per attacking session still open, goroutines (KWIK's control reader and writer,
// quic-go's own, on both ends); per attacking session opened, heap in use (what the secondary
// may queue for ReceiveRawData, its readers and QUIC state, and the attacker's).
const (
	floodGoroutinesPerSession = 12
	floodHeapPerSession       = defaultMaxPendingRawData + 1<<20
)

// A secondary under a flood of forged frames of every kind, from clients its primary sent it
// (valid tokens) and from anyone (no token), keeps its goroutines and memory within
// floodBounds per attacking session, ends every session that breaks the protocol, and keeps
// serving an honest session's delegations, byte-exact, during the flood and after it
// (acceptance 2 of issue 13).
func TestSecondaryFloodBounded(t *testing.T) {
	conf := secondaryOnlyConf()
	conf.HeartbeatInterval, conf.PathTimeout = 100*time.Millisecond, 5*time.Second
	ln := listen(t, conf)
	// The honest delegations' progress deadline is far from loopback's (1 s by default): on a
	// starved machine one failed, which is not what this test measures.
	honestConf := &Config{StreamReceiveWindow: 2 << 20, HeartbeatInterval: 100 * time.Millisecond, PathTimeout: 5 * time.Second,
		DelegationProgressTimeout: 10 * time.Second}
	pconf := *honestConf
	pconf.JoinKey = testJoinKey
	p := newPair(t, honestConf, &pconf)
	pathID, sec := addPath(t, p.server, ln, ln.Addr().String())
	serveSecondary(t, sec, nil)
	download := func() {
		t.Helper()
		ms := &multiSource{p: p, ids: []string{pathID}}
		if failures := ms.download(t, 4<<20, 128<<10); len(failures) > 0 {
			t.Fatalf("the honest secondary failed %d delegations: %v", len(failures), failures[0])
		}
	}
	download() // warm: the honest session's buffers exist before the baseline

	runtime.GC()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()

	const perKind = 3
	const n = 2000
	repeat := func(f *pb.ControlFrame, k int) []byte { return bytes.Repeat(frames(f), k) }
	type attack struct {
		name    string
		flood   func(sid, pid string) []byte
		survive bool // the flood is allowed, and costs bounded memory
	}
	attacks := []attack{
		{"forged delegations", func(sid, pid string) []byte {
			return repeat(assignFrame(&pb.DelegationAssign{LogicalStreamId: 1, Length: 1 << 40, MaxOffset: 1 << 62, Request: make([]byte, 1000)}), n)
		}, false},
		{"genuine delegations past the cap", func(sid, pid string) []byte {
			var b []byte
			for i := range maxSecondaryDelegations + 1 {
				b = append(b, frames(assignFrame(signedAssign(sid, pid, uint64(i), 1, uint64(i)<<20, 1<<20, nil)))...)
			}
			return b
		}, false},
		{"credit", func(sid, pid string) []byte {
			var b []byte
			for i := range n {
				b = append(b, frames(&pb.ControlFrame{Payload: &pb.ControlFrame_MaxStreamData{MaxStreamData: &pb.MaxStreamData{LogicalStreamId: uint64(i), Maximum: 1 << 62}}})...)
			}
			return b
		}, true},
		{"stop sending", func(sid, pid string) []byte {
			var b []byte
			for i := range n {
				b = append(b, frames(&pb.ControlFrame{Payload: &pb.ControlFrame_StopSending{StopSending: &pb.StopSending{LogicalStreamId: uint64(i), ErrorCode: 1}}})...)
			}
			return b
		}, true},
		{"raw data", func(sid, pid string) []byte {
			return repeat(&pb.ControlFrame{Payload: &pb.ControlFrame_RawPacketTransmission{RawPacketTransmission: &pb.RawPacketTransmission{Data: make([]byte, 4096)}}}, n)
		}, true},
		{"heartbeats", func(sid, pid string) []byte { return repeat(heartbeat(), n) }, true},
		{"stream frames", func(sid, pid string) []byte { return repeat(streamCreate(1), n) }, false},
		{"primary's frames", func(sid, pid string) []byte {
			return repeat(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegateRange{DelegateRange: &pb.DelegateRange{LogicalStreamId: 1, Length: 1}}}, n)
		}, false},
		{"garbage", func(sid, pid string) []byte { return bytes.Repeat(garbage, n) }, false},
		{"oversized message", func(sid, pid string) []byte { return prefix(1 << 30) }, false},
	}
	type victim struct {
		name string
		h    *rawPeer
		s    *session
		want bool
	}
	var victims []victim
	for _, a := range attacks {
		for range perKind {
			sid, pid := randomID(16), randomID(8)
			h, s := joinRaw(t, ln, sid, pid)
			h.write(a.flood(sid, pid))
			// A raw message last: delivered (or dropped, for the raw flood) once every frame
			// before it was handled.
			h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_RawPacketTransmission{RawPacketTransmission: &pb.RawPacketTransmission{Data: []byte("sync")}}})
			victims = append(victims, victim{a.name, h, s, a.survive})
		}
	}
	// Connections without a token: new sessions and forged joins, refused at the handshake.
	for range perKind * 4 {
		h := dialRaw(t, ln.Addr().String())
		h.openControl(t)
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{Version: protocolVersion}}})
		h2 := dialRaw(t, ln.Addr().String())
		h2.openControl(t)
		h2.send(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{
			Version: protocolVersion, SessionId: randomID(16), PathId: randomID(8), Credentials: make([]byte, 48), TargetAddress: ln.Addr().String(),
		}}})
		for _, x := range []*rawPeer{h, h2} {
			if err := x.closedWith(t); !errors.Is(err, ErrAuthFailed) {
				t.Fatalf("a join without a token ended with %v", err)
			}
		}
	}
	// The honest session keeps receiving while the flood is handled.
	download()

	survivors := 0
	for _, v := range victims {
		if !v.want {
			if err := endedWith(t, v.s); err == nil {
				t.Fatalf("%s: the session survived", v.name)
			}
			continue
		}
		survivors++
		if v.name == "raw data" {
			waitFor(t, func() bool {
				v.s.raw.mu.Lock()
				defer v.s.raw.mu.Unlock()
				return uint64(len(v.s.raw.queue))+v.s.raw.dropped == n+1
			})
			continue
		}
		rd, err := v.s.ReceiveRawData(boundContext(t))
		if err != nil || string(rd.Data) != "sync" {
			t.Fatalf("%s: %q, %v", v.name, rd.Data, err)
		}
	}
	runtime.GC()
	runtime.GC() // twice: sync.Pool keeps what it held until the second
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	g1 := runtime.NumGoroutine()
	heap := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("flood of %d sessions (%d still open): %+d goroutines, %+d KiB heap in use", len(victims), survivors, g1-g0, heap>>10)
	if g1-g0 > survivors*floodGoroutinesPerSession {
		t.Errorf("%d more goroutines for %d open attacking sessions, above %d each", g1-g0, survivors, floodGoroutinesPerSession)
	}
	if heap > int64(len(victims)*floodHeapPerSession) {
		t.Errorf("%d more bytes of heap for %d attacking sessions, above %d each", heap, len(victims), floodHeapPerSession)
	}
	for _, v := range victims {
		v.s.Close()
	}
	download()
}

// A primary cannot use its clients as scanners (finding 6): when a join fails, the primary
// learns a code and a generic reason, not the client's dial error (here a TLS alert naming the
// protocol the target does not speak), which the client keeps in its own path history.
func TestJoinFailureRevealsNothing(t *testing.T) {
	tc := rawTLS(true)
	tc.NextProtos = []string{"h3"} // a QUIC server that is no KWIK secondary
	ql, err := quic.ListenAddr("127.0.0.1:0", tc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ql.Close()
	p := newPair(t, clientConf(), serverConf())
	err = p.server.AddPath(ql.Addr().String())
	if err == nil {
		t.Fatal("joined a server that does not speak KWIK")
	}
	all := p.client.GetAllPaths()
	reason := all[len(all)-1].Reason
	if !strings.Contains(strings.ToLower(reason), "application protocol") {
		t.Fatalf("the client's own record lacks the detail: %q", reason)
	}
	if strings.Contains(strings.ToLower(err.Error()), "protocol") || strings.Contains(err.Error(), "h3") || strings.Contains(err.Error(), "tls") {
		t.Fatalf("the primary learned the client's dial error: %v", err)
	}
	if !errors.Is(err, ErrPathDead) {
		t.Fatalf("AddPath: %v, want KWIK_PATH_DEAD", err)
	}
}

// Delegations made at once on several streams reach a secondary in the order of their IDs,
// which it requires (a replay check): none is taken for a replay and the path stays up.
func TestConcurrentDelegationsInIDOrder(t *testing.T) {
	// Deadlines far from loopback's round trips: on a starved machine (two test suites at once
	// on two cores) a second without progress failed a delegation or the path, which is the
	// deadlines' job, not this test's subject (that none is refused for its order).
	conf := *delegationConf
	conf.PathTimeout, conf.DelegationProgressTimeout = 5*time.Second, 10*time.Second
	ms := newMultiSource(t, 1, &conf)
	const streams, size, chunk = 4, 1 << 20, 16 << 10
	ctx := testContext(t)
	var wg sync.WaitGroup
	failed := make(chan []*DelegationError, streams)
	for range streams {
		wg.Go(func() {
			st, err := ms.p.server.OpenStreamSync(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			failed <- serveInterleaved(t, st, size, chunk, ms.ids)
		})
	}
	for range streams {
		cs, err := ms.p.client.AcceptStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			got, err := io.ReadAll(cs)
			if err != nil || !bytes.Equal(got, content(0, size)) {
				t.Errorf("stream %d: %d bytes, %v", cs.StreamID(), len(got), err)
			}
		})
	}
	wg.Wait()
	close(failed)
	for f := range failed {
		if len(f) > 0 {
			t.Fatalf("%d delegations failed: %v", len(f), f[0])
		}
	}
	if err := ms.secs[0].Context().Err(); err != nil {
		t.Fatalf("the secondary's path ended: %v", context.Cause(ms.secs[0].Context()))
	}
}

// ---- content digests (finding 8: stale replicas) ----

// staleFrom is a secondary whose replica has the resource's size and other bytes from offset
// from on (a file changed in place): it serves what it has.
func staleFrom(from int64) secondaryBehaviour {
	return func(st Stream, off, n int64) error {
		b := content(off, n)
		for i := range b {
			if off+int64(i) >= from {
				b[i] ^= 0x5a
			}
		}
		_, err := st.Write(b)
		return err
	}
}

// A secondary whose replica has the right size and other bytes (from its 100,000th byte on)
// serves pieces through Fanout next to an honest one: the client reads exactly the primary's
// bytes. Each of the stale secondary's pieces fails with KWIK_DIGEST_MISMATCH at the block
// where its bytes go wrong (the blocks before count as delivered), the primary refills the
// rest, the stale secondary gets no more pieces, and its path survives (what it sends after
// the stop is dropped). The honest secondary's pieces all complete.
func TestStaleReplicaSameSizeIsRefilled(t *testing.T) {
	const wrongFrom = 100_000
	var mu sync.Mutex
	pieces := map[int64]int64{} // the stale secondary's pieces: start by end, in the resource
	serveStale := staleFrom(wrongFrom)
	ms := newMultiSource(t, 2, delegationConf, nil, func(st Stream, off, n int64) error {
		mu.Lock()
		pieces[off+n] = off
		mu.Unlock()
		return serveStale(st, off, n)
	})
	ms.behaved = true
	resource := content(0, 8<<20)
	header := content(1, 1001) // stream offsets are not the resource's
	const chunk = 256 << 10
	fr := fanoutDownload(t, ms, header, resource, &FanoutOptions{ChunkSize: chunk}, nil)
	honest, stale := ms.ids[0], ms.ids[1]
	if fr.Refilled == 0 || len(fr.Failed) == 0 {
		t.Fatalf("nothing refilled: %+v", fr)
	}
	for _, de := range fr.Failed {
		if de.PathID != stale || !errors.Is(de, ErrDigestMismatch) {
			t.Fatalf("failure %v of path %s, want only the stale path %s failing on digests", de, de.PathID, stale)
		}
		// The first bad block is the piece's first, or the one holding the resource's byte
		// 100,000 if the piece starts before it.
		mu.Lock()
		start, ok := pieces[de.Offset+de.Remaining-int64(len(header))]
		mu.Unlock()
		wantAt := start + int64(len(header))
		if start < wrongFrom {
			wantAt += (wrongFrom - start) / digestBlock * digestBlock
		}
		if !ok || de.Offset != wantAt {
			t.Errorf("failure at %d, want at the first wrong block, %d", de.Offset, wantAt)
		}
	}
	if fr.Bytes[honest] == 0 {
		t.Errorf("the honest secondary served nothing: %v", fr.Bytes)
	}
	if got := fr.Bytes[stale]; got > wrongFrom {
		t.Errorf("the stale secondary is credited with %d bytes, more than its replica has right", got)
	}
	if err := ms.secs[1].Context().Err(); err != nil {
		t.Fatalf("the stale secondary's path ended: %v", context.Cause(ms.secs[1].Context()))
	}
}

// Honest secondaries with digests on (Fanout's default): no piece fails, nothing is refilled
// or sent twice, and every secondary serves its share.
func TestHonestReplicasDigestsCostNoRefill(t *testing.T) {
	ms := newMultiSource(t, 2, delegationConf)
	ms.behaved = true // the default behaviour serves content: no ServeFanout competing
	resource := content(0, 8<<20)
	fr := fanoutDownload(t, ms, nil, resource, &FanoutOptions{ChunkSize: 256 << 10}, nil)
	if len(fr.Failed) != 0 || fr.Refilled != 0 || fr.Duplicated != 0 {
		t.Fatalf("failures %v, refilled %d, sent twice %d", fr.Failed, fr.Refilled, fr.Duplicated)
	}
	for _, id := range ms.ids {
		if fr.Bytes[id] == 0 {
			t.Errorf("secondary %s served nothing: %v", id, fr.Bytes)
		}
	}
}

// digestedStream has the primary of p write head bytes of content, delegate the next n to
// the raw secondary h on pathID with their digests, and, once refill is closed, refill what
// the delegation's failure (if any) left; dup, if not nil, is called with the stream once the
// delegation is made. It returns the client's stream, the assignment as h received it, and a
// channel with the delegation's outcome.
func digestedStream(t *testing.T, p *pair, h *rawPeer, pathID string, head, n, tail int64, refill <-chan struct{}, dup func(*stream)) (Stream, *pb.DelegationAssign, <-chan error) {
	t.Helper()
	ctx := boundContext(t)
	result := make(chan error, 1)
	go func() {
		st, err := p.server.OpenStreamSync(ctx)
		if err != nil {
			result <- err
			return
		}
		ks := st.(*stream)
		st.Write(content(0, head))
		block, ok := ks.digestBlockFor(n, 16)
		digests, err := appendDigests(nil, bytes.NewReader(content(0, head+n)), head, n, block, make([]byte, 4096))
		if !ok || err != nil {
			result <- fmt.Errorf("digests: %v, %v", ok, err)
			return
		}
		d, err := ks.delegate(pathID, -1, n, chunkRequest(head, n), digests, block)
		if err != nil {
			result <- err
			return
		}
		go func() {
			err := d.Wait(ctx)
			var de *DelegationError
			if errors.As(err, &de) {
				<-refill
				if _, werr := st.WriteAt(content(de.Offset, de.Remaining), de.Offset); werr != nil {
					err = werr
				}
			}
			result <- err
		}()
		if dup != nil {
			dup(ks)
		}
		st.Write(content(head+n, tail))
		st.Close()
	}()
	cs, err := p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cs.SetReadDeadline(time.Now().Add(hostileBound))
	assign := h.next(t, func(f *pb.ControlFrame) bool { return f.GetDelegationAssign() != nil }).GetDelegationAssign()
	return cs, assign, result
}

// readExact reads n bytes of st from offset off, each of which must be content's.
func readExact(t *testing.T, st Stream, off, n int64) {
	t.Helper()
	got := make([]byte, n)
	if _, err := io.ReadFull(st, got); err != nil {
		t.Fatalf("reading [%d, %d): %v", off, off+n, err)
	}
	if want := content(off, n); !bytes.Equal(got, want) {
		i := 0
		for got[i] == want[i] {
			i++
		}
		t.Fatalf("read a wrong byte at offset %d", off+int64(i))
	}
}

// A secondary (a raw server) sends a delegated range whose third block has one wrong byte:
// the reader gets the two blocks before it and never a byte of it, even once the rest of the
// range is there; the primary hears KWIK_DIGEST_MISMATCH with the bad block's start as the
// missing offset, the secondary is told to stop that delegation, and what it still sends is
// dropped without costing its path; the primary's refill of the rest is what the reader gets.
func TestDigestMismatchNeverReadable(t *testing.T) {
	conf := secondarySuiteConf()
	p := newPair(t, conf, conf)
	h, pathID := joinHostile(t, p.server, nil)
	const head, tail = 1000, 3000
	const n = 5*digestBlock + 1234 // six blocks, the last short
	refill := make(chan struct{})
	cs, assign, result := digestedStream(t, p, h, pathID, head, n, tail, refill, nil)
	sid := assign.LogicalStreamId
	bad := content(head, n)
	bad[2*digestBlock+7] ^= 1
	send := func(from, to int64) { // bad's bytes [from, to) of the range, in frames of 16 KiB
		for off := from; off < to; off += 16 << 10 {
			end := min(off+16<<10, to)
			h.data(t, h.packet(frame(sid, uint64(head+off), bad[off:end], false)))
		}
	}
	send(0, 4*digestBlock) // two good blocks, the bad one, a good one
	readExact(t, cs, 0, head+2*digestBlock)
	stop := h.next(t, func(f *pb.ControlFrame) bool { return f.GetStopSending() != nil }).GetStopSending()
	if stop.LogicalStreamId != sid || len(stop.DelegationIds) != 1 || stop.DelegationIds[0] != assign.DelegationId {
		t.Fatalf("StopSending %v, want one naming delegation %d", stop, assign.DelegationId)
	}
	send(4*digestBlock, n) // late: dropped
	// Nothing more is readable until the primary refills: not the bad block, not the good
	// blocks around it.
	cs.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if k, err := cs.Read(make([]byte, 1)); k != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read before the refill: %d bytes, %v; want nothing until the deadline", k, err)
	}
	cs.SetReadDeadline(time.Now().Add(hostileBound))
	close(refill)
	readExact(t, cs, head+2*digestBlock, n-2*digestBlock+tail)
	if k, err := cs.Read(make([]byte, 1)); k != 0 || err != io.EOF {
		t.Fatalf("after the stream's end: %d bytes, %v", k, err)
	}
	err := <-result
	var de *DelegationError
	if !errors.As(err, &de) || !errors.Is(err, ErrDigestMismatch) || de.Offset != head+2*digestBlock || de.Remaining != n-2*digestBlock {
		t.Fatalf("delegation outcome %v, want a digest mismatch from offset %d", err, head+2*digestBlock)
	}
	if _, ok := pathByID(p.client.GetActivePaths(), pathID); !ok {
		t.Fatalf("the secondary's path ended: %v", p.client.GetDeadPaths())
	}
	// The discarded bytes' blocks went back, and were counted as they went.
	if n := p.client.credit.blocks.Load(); n != 0 {
		t.Fatalf("the client counts %d receive blocks held after the stream's end", n)
	}
}

// A delegated range that its secondary sends only a part of, which the primary sends again
// (Fanout's rescue of an overdue piece): the primary's copy, checked like the secondary's, is
// what the reader gets, the delegation completes when the reader reaches the end, and the
// secondary is told to stop.
func TestDigestVerifiedDuplicateSatisfiesRange(t *testing.T) {
	conf := secondarySuiteConf()
	p := newPair(t, conf, conf)
	h, pathID := joinHostile(t, p.server, nil)
	const head, n, tail = 500, 3*digestBlock + 99, 700
	dupSent := make(chan error, 1)
	cs, assign, result := digestedStream(t, p, h, pathID, head, n, tail, make(chan struct{}), func(ks *stream) {
		_, err := ks.duplicate(content(head, n), head)
		dupSent <- err
	})
	// The secondary's first half block arrives too; the first copy wins either way.
	h.data(t, h.packet(frame(assign.LogicalStreamId, head, content(head, digestBlock/2), false)))
	if err := <-dupSent; err != nil {
		t.Fatal(err)
	}
	readExact(t, cs, 0, head+n+tail)
	if k, err := cs.Read(make([]byte, 1)); k != 0 || err != io.EOF {
		t.Fatalf("after the stream's end: %d bytes, %v", k, err)
	}
	if err := <-result; err != nil {
		t.Fatalf("delegation outcome %v, want complete", err)
	}
	stop := h.next(t, func(f *pb.ControlFrame) bool { return f.GetStopSending() != nil }).GetStopSending()
	if stop.LogicalStreamId != assign.LogicalStreamId {
		t.Fatalf("StopSending %v", stop)
	}
}

// With a receive window of one digest block, the reader waits at every block of a delegated
// piece until all of it is there and checked: the credit must cover the whole block, which
// the window's usual updates alone may not grant a reader that does not move. Everything
// arrives, with no failure.
func TestDigestsSmallWindowNoDeadlock(t *testing.T) {
	conf := *delegationConf
	conf.StreamReceiveWindow = 32 << 10
	conf.QUIC = &quic.Config{InitialStreamReceiveWindow: 32 << 10}
	ms := newMultiSource(t, 2, &conf)
	ms.behaved = true
	fr := fanoutDownload(t, ms, content(1, 333), content(0, 2<<20), &FanoutOptions{ChunkSize: 256 << 10}, nil)
	if len(fr.Failed) != 0 {
		t.Fatalf("failures %v", fr.Failed)
	}
}
