package kwik

// Security properties of joins and delegated ranges. TestJoinRejectedToken already covers
// tokens replayed, expired, forged, minted for another session, outliving the TTL, missing,
// and a session ID in place of a token, each presented by the session's own client;
// TestJoinRejectedByKey a secondary with another key or none. The cases here present joins
// from other connections. Secondaries writing outside their ranges: TestDelegationOutsideRange
// (before the range), TestSecondaryOutOfPlaceFrames (a stream with no delegation), the
// delegation cases of TestHostileSecondaries (past the end, fin, beyond credit, another
// stream, after completion, more written than the range) and TestDelegationPastRangeEnd.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/jointoken"
	"github.com/kwik-go/kwik/internal/wire/pb"
)

// rawJoin presents a join to the listener at addr from a new connection, as any client could,
// and returns whether it was accepted; a refusal must be KWIK_AUTH_FAILED, in the answer and in
// how the listener closed the connection.
func rawJoin(t *testing.T, addr string, sessionID, pathID string, token []byte) bool {
	t.Helper()
	h := dialRaw(t, addr)
	h.openControl(t)
	h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{
		Version: protocolVersion, SessionId: sessionID, PathId: pathID, Credentials: token, TargetAddress: addr,
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
	s.paths.mu.Lock()
	s.paths.records = append(s.paths.records, rec)
	s.paths.byID[pathID] = rec
	s.paths.mu.Unlock()
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
