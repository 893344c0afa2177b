package kwik

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/jointoken"
	"github.com/kwik-go/kwik/internal/wire/pb"
)

var testJoinKey = []byte("test join key shared by the servers")

func serverConf() *Config {
	return &Config{JoinKey: testJoinKey, HeartbeatInterval: 100 * time.Millisecond, PathTimeout: 600 * time.Millisecond}
}

func clientConf() *Config {
	return &Config{HeartbeatInterval: 100 * time.Millisecond, PathTimeout: 600 * time.Millisecond}
}

func listen(t testing.TB, conf *Config) *Listener {
	t.Helper()
	ln, err := Listen("127.0.0.1:0", testTLS.server, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeListener(ln) })
	return ln
}

// closeListener closes ln and the sessions still in its accept queue (Accept returns them
// after Close, as quic-go's does).
func closeListener(ln *Listener) {
	ln.Close()
	for {
		s, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		s.Close()
	}
}

// addPath has the primary add the server behind ln, reached at addr, and returns the path's
// ID and the secondary's session.
func addPath(t testing.TB, primary *session, ln *Listener, addr string) (string, *session) {
	t.Helper()
	ctx := testContext(t)
	done := make(chan error, 1)
	go func() { done <- primary.AddPath(addr) }()
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := <-done; err != nil {
		t.Fatalf("AddPath(%s): %v", addr, err)
	}
	sec := s.(*session)
	return sec.primary.id, sec
}

func pathByID(infos []PathInfo, id string) (PathInfo, bool) {
	for _, pi := range infos {
		if pi.PathID == id {
			return pi, true
		}
	}
	return PathInfo{}, false
}

func TestAddPath(t *testing.T) {
	p := newPair(t, clientConf(), &Config{JoinKey: testJoinKey, MaxPaths: 3})
	ln1, ln2, ln3 := listen(t, serverConf()), listen(t, serverConf()), listen(t, serverConf())
	id1, s1 := addPath(t, p.server, ln1, ln1.Addr().String())
	id2, s2 := addPath(t, p.server, ln2, ln2.Addr().String())
	for i, s := range []*session{s1, s2} {
		if s.Role() != RoleSecondary || s.ID() != p.client.ID() {
			t.Fatalf("secondary %d: role %v, session %q; want secondary of %q", i, s.Role(), s.ID(), p.client.ID())
		}
		if _, err := s.OpenStreamSync(testContext(t)); !errors.Is(err, ErrNotPrimary) {
			t.Fatalf("a secondary opened a stream: %v", err)
		}
		if !errors.Is(s.AddPath("x"), ErrNotPrimary) || !errors.Is(s.RemovePath(id1), ErrNotPrimary) {
			t.Fatal("path methods on a secondary must fail with ErrNotPrimary")
		}
	}
	active := p.server.GetActivePaths()
	if len(active) != 3 {
		t.Fatalf("primary lists %d active paths, want 3: %+v", len(active), active)
	}
	for id, ln := range map[string]*Listener{id1: ln1, id2: ln2} {
		pi, ok := pathByID(active, id)
		if !ok || pi.Address != ln.Addr().String() || pi.IsPrimary || pi.Status != PathActive {
			t.Fatalf("path %s on the primary: %+v", id, pi)
		}
		if pi, ok := pathByID(p.client.GetActivePaths(), id); !ok || pi.Status != PathActive {
			t.Fatalf("path %s on the client: %+v", id, pi)
		}
	}
	if err := p.server.AddPath(ln1.Addr().String()); err == nil {
		t.Fatal("adding the same address twice succeeded")
	}
	if err := p.server.AddPath(ln3.Addr().String()); err == nil {
		t.Fatal("adding a path past MaxPaths succeeded")
	}
	if err := p.server.AddPath("127.0.0.1:1"); err == nil {
		t.Fatal("a path to nowhere was added")
	}
	if err := p.client.AddPath(ln3.Addr().String()); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("client AddPath: %v", err)
	}
}

// noSession asserts that ln has no authenticated session waiting.
func noSession(t *testing.T, ln *Listener) {
	t.Helper()
	if n := len(ln.queue); n != 0 {
		t.Fatalf("the listener surfaced %d sessions", n)
	}
}

func TestJoinRejectedByKey(t *testing.T) {
	p := newPair(t, clientConf(), serverConf())
	for name, conf := range map[string]*Config{
		"other key": {JoinKey: []byte("another key")},
		"no key":    {},
	} {
		t.Run(name, func(t *testing.T) {
			ln := listen(t, conf)
			err := p.server.AddPath(ln.Addr().String())
			if !errors.Is(err, ErrAuthFailed) {
				t.Fatalf("AddPath to a server with %s: %v, want KWIK_AUTH_FAILED", name, err)
			}
			noSession(t, ln)
			if pi := p.server.GetDeadPaths(); len(pi) == 0 {
				t.Fatal("the refused path is not in the dead paths")
			}
		})
	}
}

// TestJoinRejectedToken joins a secondary directly with crafted tokens.
func TestJoinRejectedToken(t *testing.T) {
	p := newPair(t, clientConf(), serverConf())
	ln := listen(t, serverConf())
	sid := p.client.ID()
	now := time.Now()
	valid, _ := jointoken.Issue(testJoinKey, sid, "0011223344556677", ln.Addr().String(), now, now.Add(10*time.Second))
	expired, _ := jointoken.Issue(testJoinKey, sid, "0011223344556678", ln.Addr().String(), now, now.Add(-time.Second))
	forged := bytes.Clone(valid)
	forged[20] ^= 0xff
	otherSession, _ := jointoken.Issue(testJoinKey, randomID(16), "0011223344556679", ln.Addr().String(), now, now.Add(10*time.Second))
	tooLong, _ := jointoken.Issue(testJoinKey, sid, "001122334455667a", ln.Addr().String(), now, now.Add(time.Hour))
	join := func(token []byte, pathID string) error {
		ctx := testContext(t)
		rec := &pathRecord{id: pathID, address: ln.Addr().String(), status: PathConnecting}
		if err := p.client.runOnLoop(func() {
			p.client.paths.records = append(p.client.paths.records, rec)
			p.client.paths.byID[pathID] = rec
		}); err != nil {
			return err
		}
		return p.client.dialSecondary(ctx, rec, token, PathConnecting)
	}
	if err := join(valid, "0011223344556677"); err != nil {
		t.Fatalf("valid token refused: %v", err)
	}
	s, err := ln.Accept(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct {
		name   string
		token  []byte
		pathID string
	}{
		{"replayed", valid, "0011223344556677"},
		{"replayed for another path", valid, "00112233445566ff"},
		{"expired", expired, "0011223344556678"},
		{"forged", forged, "0011223344556677"},
		{"for another session", otherSession, "0011223344556679"},
		{"outliving the TTL", tooLong, "001122334455667a"},
		{"missing", nil, "0011223344556680"},
		{"session ID in place of a token", []byte(sid), "0011223344556681"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := join(tc.token, tc.pathID)
			if !errors.Is(err, ErrAuthFailed) {
				t.Fatalf("join with a %s token: %v, want KWIK_AUTH_FAILED", tc.name, err)
			}
			noSession(t, ln)
		})
	}
}

func TestRemovePath(t *testing.T) {
	p := newPair(t, clientConf(), serverConf())
	ln := listen(t, serverConf())
	id, sec := addPath(t, p.server, ln, ln.Addr().String())
	if err := p.server.RemovePath(p.server.primary.id); err == nil {
		t.Fatal("the primary path was removed")
	}
	if err := p.server.RemovePath("ffffffffffffffff"); !errors.Is(err, ErrPathNotFound) {
		t.Fatalf("removing an unknown path: %v", err)
	}
	if err := p.client.RemovePath(id); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("client RemovePath: %v", err)
	}
	if err := p.server.RemovePath(id); err != nil {
		t.Fatal(err)
	}
	<-sec.Context().Done()
	if err := context.Cause(sec.Context()); !errors.Is(err, ErrPathRemoved) {
		t.Fatalf("the removed secondary's session ended with %v", err)
	}
	if _, ok := pathByID(p.server.GetActivePaths(), id); ok {
		t.Fatal("a removed path is still active")
	}
	for _, s := range []*session{p.server, p.client} {
		if pi, ok := pathByID(s.GetAllPaths(), id); !ok || pi.Status != PathRemoved {
			t.Fatalf("%v history: %+v", s.Role(), pi)
		}
	}
	if err := p.server.RemovePath(id); err == nil {
		t.Fatal("removing a path twice succeeded")
	}
	// The address may be added again, as a new path.
	id2, _ := addPath(t, p.server, ln, ln.Addr().String())
	if id2 == id || len(p.server.GetAllPaths()) != 3 {
		t.Fatalf("re-added path %s, history %+v", id2, p.server.GetAllPaths())
	}
}

func TestRawData(t *testing.T) {
	p := newPair(t, clientConf(), serverConf())
	ln1, ln2 := listen(t, serverConf()), listen(t, serverConf())
	id1, s1 := addPath(t, p.server, ln1, ln1.Addr().String())
	id2, s2 := addPath(t, p.server, ln2, ln2.Addr().String())
	primaryID := p.server.primary.id
	ctx := testContext(t)
	for _, tc := range []struct {
		name   string
		from   *session
		fromID string
		to     *session
		toID   string
		data   string
	}{
		{"primary to secondary", p.server, primaryID, s1, id1, "hello s1"},
		{"secondary to primary", s1, id1, p.server, primaryID, "hello primary"},
		{"secondary to secondary", s2, id2, s1, id1, "hello from s2"},
		{"to itself", s2, id2, s2, id2, "loop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.from.SendRawData([]byte(tc.data), tc.toID); err != nil {
				t.Fatal(err)
			}
			got, err := tc.to.ReceiveRawData(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(got.Data) != tc.data || got.From != tc.fromID {
				t.Fatalf("received %q from %s, want %q from %s", got.Data, got.From, tc.data, tc.fromID)
			}
		})
	}
	t.Run("client to server", func(t *testing.T) {
		if err := p.client.SendRawData([]byte("direct"), id2); err != nil {
			t.Fatal(err)
		}
		got, err := s2.ReceiveRawData(ctx)
		if err != nil || string(got.Data) != "direct" || got.From != "" {
			t.Fatalf("got %+v, %v", got, err)
		}
		if _, err := p.client.ReceiveRawData(ctx); err == nil {
			t.Fatal("the client received raw data")
		}
	})
	t.Run("unknown path", func(t *testing.T) {
		for _, s := range []*session{p.server, s1} {
			if err := s.SendRawData([]byte("x"), "0123456789abcdef"); !errors.Is(err, ErrPathNotFound) {
				t.Fatalf("%v: %v, want KWIK_PATH_NOT_FOUND", s.Role(), err)
			}
		}
	})
	t.Run("too large", func(t *testing.T) {
		big := make([]byte, defaultMaxMessageSize)
		for _, s := range []*session{p.server, s1} {
			if err := s.SendRawData(big, id1); !errors.Is(err, ErrPacketTooLarge) {
				t.Fatalf("%v: %v, want KWIK_PACKET_TOO_LARGE", s.Role(), err)
			}
		}
	})
}

// A secondary may not touch the client's streams: the client cuts that path off, and the
// session (and its streams on the primary path) carries on.
func TestSecondaryOutOfPlaceFrames(t *testing.T) {
	p := newPair(t, clientConf(), serverConf())
	ln := listen(t, serverConf())
	ctx := testContext(t)
	st, err := p.server.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("before"))
	cst, err := p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, sec := addPath(t, p.server, ln, ln.Addr().String())
	// The secondary writes data for the client's stream on its own data plane.
	rs, err := sec.primary.pool.assign()
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.writeFrame(cst.StreamID(), 6, []byte("intruder"), false); err != nil {
		t.Fatal(err)
	}
	<-sec.Context().Done()
	if err := context.Cause(sec.Context()); !errors.Is(err, ErrOffsetMismatch) {
		t.Fatalf("secondary ended with %v, want KWIK_OFFSET_MISMATCH", err)
	}
	waitFor(t, func() bool {
		pi, _ := pathByID(p.server.GetAllPaths(), id)
		return pi.Status == PathDead
	})
	st.Write([]byte(" after"))
	st.Close()
	got, err := io.ReadAll(cst)
	if err != nil || string(got) != "before after" {
		t.Fatalf("stream on the primary path: %q, %v", got, err)
	}
	// A control frame for the client's streams from a secondary is cut off too.
	ln2 := listen(t, serverConf())
	_, sec2 := addPath(t, p.server, ln2, ln2.Addr().String())
	sec2.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_StreamReset{StreamReset: &pb.StreamReset{LogicalStreamId: cst.StreamID()}}})
	<-sec2.Context().Done()
	if err := context.Cause(sec2.Context()); !errors.Is(err, ErrInvalidFrame) {
		t.Fatalf("secondary 2 ended with %v, want KWIK_INVALID_FRAME", err)
	}
	if p.client.Context().Err() != nil {
		t.Fatal("the session ended")
	}
}

var _ = sha256.New

// A client's AllowPath refuses the addresses it does not want to dial: the primary's AddPath
// fails with KWIK_AUTH_FAILED and no reason, and the client records the refused path; allowed
// addresses join as before.
func TestAllowPath(t *testing.T) {
	good, bad := listen(t, serverConf()), listen(t, serverConf())
	conf := clientConf()
	conf.AllowPath = func(address string) error {
		if address != good.Addr().String() {
			return errors.New("not on the list")
		}
		return nil
	}
	p := newPair(t, conf, serverConf())
	err := p.server.AddPath(bad.Addr().String())
	// The reason stays with the client: the primary learns only that the join was refused.
	if !errors.Is(err, ErrAuthFailed) || strings.Contains(err.Error(), "not on the list") {
		t.Fatalf("AddPath to a refused address: %v", err)
	}
	if pi, ok := pathByID(p.client.GetDeadPaths(), p.client.GetAllPaths()[1].PathID); !ok || !strings.Contains(pi.Reason, "not on the list") {
		t.Fatalf("the client's record of the refused path: %+v", p.client.GetAllPaths())
	}
	noSession(t, bad)
	addPath(t, p.server, good, good.Addr().String())
}

// A client's AllowPath that never answers fails the join once the handshake timeout passes
// (the primary's AddPath fails, the path is dead), and the client's Close does not wait for it.
func TestAllowPathThatNeverAnswers(t *testing.T) {
	sec := listen(t, serverConf())
	release := make(chan struct{})
	asked := make(chan struct{}, 1)
	conf := clientConf()
	conf.HandshakeTimeout = 300 * time.Millisecond
	conf.AllowPath = func(string) error {
		asked <- struct{}{}
		<-release
		return nil
	}
	p := newPair(t, conf, serverConf())
	defer close(release)
	err := p.server.AddPath(sec.Addr().String())
	if !errors.Is(err, ErrPathDead) {
		t.Fatalf("AddPath while the client's policy does not answer: %v, want KWIK_PATH_DEAD", err)
	}
	<-asked
	paths := p.client.GetAllPaths()
	if len(paths) != 2 || paths[1].Status != PathDead || !strings.Contains(paths[1].Reason, "did not answer") {
		t.Fatalf("the client's paths: %+v", paths)
	}
	noSession(t, sec)
	closed := make(chan error, 1)
	go func() { closed <- p.client.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-testContext(t).Done():
		t.Fatal("Close waits for the client's policy")
	}
}
