package kwik

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/netsim"
	"github.com/quic-go/quic-go"
)

// relay puts the server behind ln behind a netsim link and returns it.
func relay(t testing.TB, ln *Listener, conf netsim.Config) *netsim.Relay {
	t.Helper()
	r, err := netsim.NewRelay("127.0.0.1:0", ln.Addr().String(), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// dialVia dials the primary behind ln through a relay.
func dialVia(t testing.TB, ln *Listener, r *netsim.Relay, conf *Config) (*session, *session) {
	t.Helper()
	ctx := testContext(t)
	accepted := make(chan Session, 1)
	go func() {
		s, err := ln.Accept(ctx)
		if err == nil {
			accepted <- s
		}
		close(accepted)
	}()
	c, err := Dial(ctx, r.Addr().String(), testTLS.client, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, ok := <-accepted
	if !ok {
		t.Fatal("no session accepted")
	}
	t.Cleanup(func() { s.Close() })
	return c.(*session), s.(*session)
}

// streamer keeps a server-opened stream flowing to the client and checks every byte.
type streamer struct {
	done chan error
}

func startStreamer(t *testing.T, server, client *session, stop <-chan struct{}) *streamer {
	st := &streamer{done: make(chan error, 1)}
	ctx := testContext(t)
	s, err := server.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 32<<10)
		for i := uint64(0); ; i++ {
			select {
			case <-stop:
				s.Close()
				return
			default:
			}
			pattern(buf, i)
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	}()
	go func() {
		cs, err := client.AcceptStream(ctx)
		if err != nil {
			st.done <- err
			return
		}
		buf, want := make([]byte, 32<<10), make([]byte, 32<<10)
		for i := uint64(0); ; i++ {
			if _, err := io.ReadFull(cs, buf); err != nil {
				if err == io.EOF {
					err = nil
				}
				st.done <- err
				return
			}
			pattern(want, i)
			if !bytes.Equal(buf, want) {
				st.done <- errors.New("stream corrupted")
				return
			}
		}
	}()
	return st
}

// A blackholed secondary is declared dead within PathTimeout plus one heartbeat, the primary
// is told, operations naming it fail with ErrPathDead, and the primary path's streams flow
// on, byte-exact, while secondaries are added, removed and killed.
func TestDeadSecondary(t *testing.T) {
	p := newPair(t, clientConf(), serverConf())
	stop := make(chan struct{})
	st := startStreamer(t, p.server, p.client, stop)

	// The secondary's own path ends with its QUIC idle timeout once cut off.
	sconf := serverConf()
	sconf.QUIC = &quic.Config{MaxIdleTimeout: 2 * time.Second}
	ln1, ln2 := listen(t, sconf), listen(t, serverConf())
	r1 := relay(t, ln1, netsim.Config{})
	id1, s1 := addPath(t, p.server, ln1, r1.Addr().String())
	id2, _ := addPath(t, p.server, ln2, ln2.Addr().String())
	if pi, _ := pathByID(p.server.GetActivePaths(), id1); pi.Address != r1.Addr().String() {
		t.Fatalf("path through the relay: %+v", pi)
	}

	killed := time.Now()
	r1.SetBlackhole(true)
	waitFor(t, func() bool { _, ok := pathByID(p.server.GetDeadPaths(), id1); return ok })
	took := time.Since(killed)
	conf := clientConf()
	// The bound plus generous room for a loaded machine: the check is that detection follows
	// PathTimeout, not QUIC's 30 s idle timeout.
	if bound := conf.PathTimeout + conf.HeartbeatInterval; took > bound+3*time.Second {
		t.Fatalf("dead path reported after %v, bound %v", took, bound)
	}
	t.Logf("blackholed secondary reported dead to the primary after %v (PathTimeout %v, heartbeat %v)", took, conf.PathTimeout, conf.HeartbeatInterval)
	if pi, _ := pathByID(p.client.GetDeadPaths(), id1); pi.PathID != id1 {
		t.Fatal("the client does not list the path as dead")
	}
	if err := p.server.SendRawData([]byte("x"), id1); !errors.Is(err, ErrPathDead) {
		t.Fatalf("SendRawData to a dead path: %v", err)
	}
	if err := p.client.SendRawData([]byte("x"), id1); !errors.Is(err, ErrPathDead) {
		t.Fatalf("client SendRawData to a dead path: %v", err)
	}
	// Removing a dead path stops the client's attempts to rejoin it.
	if err := p.server.RemovePath(id1); err != nil {
		t.Fatalf("RemovePath of a dead path: %v", err)
	}
	for side, s := range map[string]*session{"primary": p.server, "client": p.client} {
		if pi, _ := pathByID(s.GetAllPaths(), id1); pi.Status != PathRemoved {
			t.Fatalf("the %s lists the removed dead path as %v", side, pi.Status)
		}
	}
	// The secondary, cut off too, ends its session on its own, with QUIC's idle timeout.
	<-s1.Context().Done()
	requireIdleTimeoutError(t, "the blackholed secondary", context.Cause(s1.Context()))
	// Remove the other; add a third; the stream on the primary path never noticed.
	if err := p.server.RemovePath(id2); err != nil {
		t.Fatal(err)
	}
	ln3 := listen(t, serverConf())
	addPath(t, p.server, ln3, ln3.Addr().String())
	if p.client.Context().Err() != nil {
		t.Fatal("the session ended")
	}
	close(stop)
	if err := <-st.done; err != nil {
		t.Fatalf("stream on the primary path: %v", err)
	}
}

// A blackholed primary ends the session on the client and the primary with QUIC's idle
// timeout error, and the client tells every secondary KWIK_PATH_DEAD.
func TestDeadPrimary(t *testing.T) {
	idle := &quic.Config{MaxIdleTimeout: 2 * time.Second}
	pconf, cconf := serverConf(), clientConf()
	pconf.QUIC, cconf.QUIC = idle, idle
	ln := listen(t, pconf)
	r := relay(t, ln, netsim.Config{})
	client, primary := dialVia(t, ln, r, cconf)
	ln1, ln2 := listen(t, serverConf()), listen(t, serverConf())
	_, s1 := addPath(t, primary, ln1, ln1.Addr().String())
	_, s2 := addPath(t, primary, ln2, ln2.Addr().String())
	ctx := testContext(t)
	cs, err := client.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() { _, err := cs.Read(make([]byte, 1)); readErr <- err }()

	r.SetBlackhole(true)
	for name, s := range map[string]*session{"client": client, "primary": primary, "secondary 1": s1, "secondary 2": s2} {
		select {
		case <-s.Context().Done():
		case <-ctx.Done():
			t.Fatalf("%s session still open", name)
		}
		err := context.Cause(s.Context())
		if s.role == RoleSecondary {
			if !errors.Is(err, ErrPathDead) {
				t.Fatalf("%s session ended with %v, want KWIK_PATH_DEAD", name, err)
			}
			continue
		}
		requireIdleTimeoutError(t, name, err)
	}
	requireIdleTimeoutError(t, "pending Read", <-readErr)
}

// quic-go fails a connection's streams with its error before it cancels the connection's
// context: a path whose control stream reports QUIC's idle timeout must end the session with
// that error, never with KWIK_INVALID_FRAME (which on a secondary also forbids rejoining).
func TestStreamErrorOfAClosingConnection(t *testing.T) {
	p := newPair(t, nil, nil)
	p.client.primary.fail(&quic.IdleTimeoutError{})
	<-p.client.Context().Done()
	requireIdleTimeoutError(t, "client session", context.Cause(p.client.Context()))
}

// Many sessions timing out at once (the race the test above pins down, as it happens): every
// side of every one ends with QUIC's idle timeout error.
func TestIdleTimeoutsAreNeverProtocolErrors(t *testing.T) {
	const sessions = 16
	conf := &Config{QUIC: &quic.Config{MaxIdleTimeout: time.Second}}
	ln := listen(t, conf)
	ctx := testContext(t)
	var all []Session
	for range sessions {
		accepted := acceptOne(ctx, ln)
		c, err := Dial(ctx, ln.Addr().String(), testTLS.client, conf)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s := <-accepted
		if s == nil {
			t.Fatal("no session accepted")
		}
		defer s.Close()
		all = append(all, c, s)
	}
	for i, s := range all {
		waitDone(t, ctx, fmt.Sprintf("session %d", i), s.Context())
		requireIdleTimeoutError(t, fmt.Sprintf("session %d (%v)", i, s.Role()), context.Cause(s.Context()))
	}
}
