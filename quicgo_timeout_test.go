// Tests ported from quic-go v0.65.0's integrationtests/self (timeout_test.go,
// handshake_context_test.go, handshake_drop_test.go) to KWIK's API, over real UDP on loopback
// with quic-go's own lossy proxy (integrationtests/tools/proxy) instead of its simulated
// network and synctest bubbles. The assertions are the originals' where the API allows.
//
// quic-go is distributed under the MIT licence:
//
//	Copyright (c) 2016 the quic-go authors & Google, Inc.
//
//	Permission is hereby granted, free of charge, to any person obtaining a copy of this
//	software and associated documentation files (the "Software"), to deal in the Software
//	without restriction, including without limitation the rights to use, copy, modify, merge,
//	publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons
//	to whom the Software is furnished to do so, subject to the following conditions:
//
//	The above copyright notice and this permission notice shall be included in all copies or
//	substantial portions of the Software.
//
//	THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
//	INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR
//	PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
//	FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
//	OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
//	DEALINGS IN THE SOFTWARE.

package kwik

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	quicproxy "github.com/quic-go/quic-go/integrationtests/tools/proxy"
)

// requireIdleTimeoutError is quic-go's: the error is an *quic.IdleTimeoutError and a net.Error
// whose Timeout is true.
func requireIdleTimeoutError(t *testing.T, what string, err error) {
	t.Helper()
	var idle *quic.IdleTimeoutError
	if !errors.As(err, &idle) || !idle.Timeout() {
		t.Fatalf("%s: %v (%T), want a *quic.IdleTimeoutError", what, err, err)
	}
	var nerr net.Error
	if !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Fatalf("%s: %v is not a net.Error with Timeout", what, err)
	}
}

// newProxy puts quic-go's proxy in front of the server at addr, until the test ends; drop
// decides per packet, delay is added each way.
func newProxy(t testing.TB, addr net.Addr, drop quicproxy.DropCallback, delay time.Duration) *quicproxy.Proxy {
	t.Helper()
	p, stop, err := startProxy(addr, drop, delay)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return p
}

// startProxy starts quic-go's proxy; stop closes it and its socket.
func startProxy(addr net.Addr, drop quicproxy.DropCallback, delay time.Duration) (*quicproxy.Proxy, func(), error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, err
	}
	p := &quicproxy.Proxy{Conn: conn, ServerAddr: addr.(*net.UDPAddr), DropPacket: drop}
	if delay > 0 {
		p.DelayPacket = func(quicproxy.Direction, net.Addr, net.Addr, []byte) time.Duration { return delay }
	}
	if err := p.Start(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return p, func() {
		p.Close()
		conn.Close()
	}, nil
}

// dropAll is a DropCallback that drops everything while cut is set.
func dropAll(cut *atomic.Bool) quicproxy.DropCallback {
	return func(quicproxy.Direction, net.Addr, net.Addr, []byte) bool { return cut.Load() }
}

// acceptOne accepts the next session on ln in the background.
func acceptOne(ctx context.Context, ln *Listener) <-chan Session {
	ch := make(chan Session, 1)
	go func() {
		s, _ := ln.Accept(ctx)
		ch <- s
	}()
	return ch
}

// waitDone waits for ctx (a session's) to end, or fails once the test's context does.
func waitDone(t *testing.T, test context.Context, what string, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-test.Done():
		t.Fatalf("%s still open", what)
	}
}

// Port of TestIdleTimeout: a session whose link is cut ends on both sides with QUIC's idle
// timeout error, at the configured idle timeout: not earlier, although PathTimeout is shorter
// (it watches secondary paths only), and every pending and later call returns that error.
func TestIdleTimeoutCutLink(t *testing.T) {
	const idleTimeout = 2 * time.Second
	conf := &Config{
		QUIC:              &quic.Config{MaxIdleTimeout: idleTimeout},
		HeartbeatInterval: 100 * time.Millisecond,
		PathTimeout:       500 * time.Millisecond,
	}
	ln := listen(t, conf)
	var cut atomic.Bool
	px := newProxy(t, ln.Addr(), dropAll(&cut), 0)
	ctx := testContext(t)
	accepted := acceptOne(ctx, ln)
	// Every packet either side receives comes after this, and QUIC's idle timer starts at the
	// last one (or at the first ack-eliciting packet sent after it, which may be a handshake
	// packet): no session may end before start + idleTimeout. (Taken after the exchange
	// below, it would race with packets sent just before it.)
	start := time.Now()
	conn, err := Dial(ctx, px.LocalAddr().String(), testTLS.client, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	serverConn := <-accepted
	if serverConn == nil {
		t.Fatal("no session accepted")
	}
	defer serverConn.Close()
	str, err := serverConn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write([]byte("foobar")); err != nil {
		t.Fatal(err)
	}
	strIn, err := conn.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	strOut, err := conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(strIn, make([]byte, 6)); err != nil {
		t.Fatal(err)
	}
	cut.Store(true)

	waitDone(t, ctx, "server session", serverConn.Context())
	if took := time.Since(start); took < idleTimeout {
		t.Fatalf("server session ended after %v, before the idle timeout %v", took, idleTimeout)
	} else {
		t.Logf("server session timed out after %v (idle timeout %v)", took, idleTimeout)
	}
	waitDone(t, ctx, "client session", conn.Context())
	if took := time.Since(start); took < idleTimeout {
		t.Fatalf("client session ended after %v, before the idle timeout %v", took, idleTimeout)
	} else {
		t.Logf("client session timed out after %v (idle timeout %v)", took, idleTimeout)
	}
	requireIdleTimeoutError(t, "server context", context.Cause(serverConn.Context()))
	requireIdleTimeoutError(t, "client context", context.Cause(conn.Context()))

	_, err = strIn.Write([]byte("test"))
	requireIdleTimeoutError(t, "strIn.Write", err)
	_, err = strIn.Read([]byte{0})
	requireIdleTimeoutError(t, "strIn.Read", err)
	_, err = strOut.Write([]byte("test"))
	requireIdleTimeoutError(t, "strOut.Write", err)
	_, err = strOut.Read([]byte{0})
	requireIdleTimeoutError(t, "strOut.Read", err)
	_, err = conn.OpenStream()
	requireIdleTimeoutError(t, "OpenStream", err)
	_, err = conn.OpenUniStream()
	requireIdleTimeoutError(t, "OpenUniStream", err)
	_, err = conn.AcceptStream(ctx)
	requireIdleTimeoutError(t, "AcceptStream", err)
	_, err = conn.AcceptUniStream(ctx)
	requireIdleTimeoutError(t, "AcceptUniStream", err)
}

// The same cut with a secondary in the session: the client and the primary end with QUIC's
// idle timeout error, and so does the secondary, cut off as well (its own path's idle timeout:
// the client's close cannot reach it). The client marks the secondary's path dead first
// (PathTimeout), which does not end the session.
func TestIdleTimeoutCutLinkEverySide(t *testing.T) {
	const idleTimeout = 2 * time.Second
	conf := &Config{
		QUIC:              &quic.Config{MaxIdleTimeout: idleTimeout},
		JoinKey:           testJoinKey,
		HeartbeatInterval: 100 * time.Millisecond,
		PathTimeout:       500 * time.Millisecond,
	}
	ln, ln1 := listen(t, conf), listen(t, conf)
	var cut atomic.Bool
	px, px1 := newProxy(t, ln.Addr(), dropAll(&cut), 0), newProxy(t, ln1.Addr(), dropAll(&cut), 0)
	ctx := testContext(t)
	accepted := acceptOne(ctx, ln)
	// Before every packet of the session: neither the client nor the primary may time out
	// before start + idleTimeout. (The secondary hears the client's heartbeats until the cut:
	// its idle timer has no such bound here.)
	start := time.Now()
	c, err := Dial(ctx, px.LocalAddr().String(), testTLS.client, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	primary := <-accepted
	if primary == nil {
		t.Fatal("no session accepted")
	}
	defer primary.Close()
	_, secondary := addPath(t, primary.(*session), ln1, px1.LocalAddr().String())
	// A last exchange on the primary path.
	str, err := primary.OpenUniStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write([]byte("foobar")); err != nil {
		t.Fatal(err)
	}
	in, err := c.AcceptUniStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(in, make([]byte, 6)); err != nil {
		t.Fatal(err)
	}
	cut.Store(true)
	for _, s := range []struct {
		name string
		sess Session
	}{{"client", c}, {"primary", primary}, {"secondary", secondary}} {
		waitDone(t, ctx, s.name, s.sess.Context())
		took := time.Since(start)
		if s.sess.Role() != RoleSecondary && took < idleTimeout {
			t.Fatalf("%s ended after %v, before the idle timeout %v", s.name, took, idleTimeout)
		}
		t.Logf("%s timed out after %v", s.name, took)
		requireIdleTimeoutError(t, s.name, context.Cause(s.sess.Context()))
	}
}

// An idle session is not kept alive by KWIK: it ends with QUIC's idle timeout on both sides,
// secondary paths and their heartbeats notwithstanding, as a quic-go connection does.
func TestIdleSessionTimesOut(t *testing.T) {
	const idleTimeout = time.Second
	conf := &Config{QUIC: &quic.Config{MaxIdleTimeout: idleTimeout}, JoinKey: testJoinKey, HeartbeatInterval: 100 * time.Millisecond, PathTimeout: 500 * time.Millisecond}
	start := time.Now() // before any packet of the session
	p := newPair(t, conf, conf)
	ln1 := listen(t, conf)
	_, secondary := addPath(t, p.server, ln1, ln1.Addr().String())
	ctx := testContext(t)
	for name, s := range map[string]*session{"client": p.client, "primary": p.server} {
		waitDone(t, ctx, name, s.Context())
		requireIdleTimeoutError(t, name, context.Cause(s.Context()))
	}
	if took := time.Since(start); took < idleTimeout {
		t.Fatalf("ended after %v, before the idle timeout %v", took, idleTimeout)
	}
	// The secondary hears from the client that the session is over.
	waitDone(t, ctx, "secondary", secondary.Context())
	if err := context.Cause(secondary.Context()); !errors.Is(err, ErrPathDead) {
		t.Fatalf("secondary ended with %v, want KWIK_PATH_DEAD", err)
	}
}

// Port of TestKeepAlive: with QUIC.KeepAlivePeriod, an idle session outlives the idle timeout.
func TestKeepAlive(t *testing.T) {
	const idleTimeout = time.Second
	conf := &Config{QUIC: &quic.Config{MaxIdleTimeout: idleTimeout, KeepAlivePeriod: idleTimeout / 2}}
	p := newPair(t, conf, conf)
	// Waiting is the test: the session must live three idle timeouts without traffic.
	select {
	case <-p.server.Context().Done():
		t.Fatalf("server session ended: %v", context.Cause(p.server.Context()))
	case <-p.client.Context().Done():
		t.Fatalf("client session ended: %v", context.Cause(p.client.Context()))
	case <-time.After(3 * idleTimeout):
	}
	ctx := testContext(t)
	str, err := p.client.OpenUniStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write([]byte("foobar")); err != nil {
		t.Fatal(err)
	}
	str.Close()
	in, err := p.server.AcceptUniStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(in); err != nil || string(b) != "foobar" {
		t.Fatalf("read %q, %v", b, err)
	}
}

// Port of TestHandshakeIdleTimeout: a Dial to a server that never answers fails after
// QUIC.HandshakeIdleTimeout with QUIC's idle timeout error; Config.HandshakeTimeout, shorter,
// bounds KWIK's authentication only and does not cut the QUIC handshake short.
func TestHandshakeIdleTimeout(t *testing.T) {
	const handshakeIdleTimeout = time.Second
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	_, err = Dial(context.Background(), silent.LocalAddr().String(), testTLS.client, &Config{
		HandshakeTimeout: 200 * time.Millisecond,
		QUIC:             &quic.Config{HandshakeIdleTimeout: handshakeIdleTimeout},
	})
	requireIdleTimeoutError(t, "Dial", err)
	if took := time.Since(start); took < handshakeIdleTimeout {
		t.Fatalf("Dial failed after %v, before the handshake idle timeout %v", took, handshakeIdleTimeout)
	}
}

// Port of TestHandshakeContextTimeout.
func TestHandshakeContextTimeout(t *testing.T) {
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, silent.LocalAddr().String(), testTLS.client, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial: %v, want context.DeadlineExceeded", err)
	}
}

// Port of TestHandshakeCancellationError: Dial returns the cause its context was canceled with.
func TestHandshakeCancellationError(t *testing.T) {
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx, cancel := context.WithCancelCause(context.Background())
	errChan := make(chan error, 1)
	go func() {
		_, err := Dial(ctx, silent.LocalAddr().String(), testTLS.client, nil)
		errChan <- err
	}()
	cancel(errors.New("application cancelled"))
	if err := <-errChan; err == nil || err.Error() != "application cancelled" {
		t.Fatalf("Dial: %v, want the cancellation's cause", err)
	}
}

// dropOneThird is quic-go's dropCallbackDropOneThird: every packet has a one-in-three chance
// of being dropped, in both directions, but never more than 10 in a row in one direction.
func dropOneThird() quicproxy.DropCallback {
	const maxSequentiallyDropped = 10
	var mx sync.Mutex
	var toClient, toServer int
	return func(d quicproxy.Direction, _, _ net.Addr, _ []byte) bool {
		drop := mrand.IntN(3) == 0
		mx.Lock()
		defer mx.Unlock()
		n := &toServer
		if d == quicproxy.DirectionOutgoing {
			n = &toClient
		}
		if drop {
			*n++
			if *n > maxSequentiallyDropped {
				drop = false
			}
		}
		if !drop {
			*n = 0
		}
		return drop
	}
}

// lossRuns is how many handshake-and-transfer runs TestHandshakeAndTransferWithPacketLoss
// makes per protocol: a few in CI; KWIK_LOSS_RUNS=100 for the acceptance run (README).
func lossRuns(t *testing.T) int {
	if v := os.Getenv("KWIK_LOSS_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("KWIK_LOSS_RUNS=%q", v)
		}
		return n
	}
	return 2
}

// Port of TestHandshakeWithPacketLoss ("drop 1/3 of packets in direction both"): handshake and
// transfer succeed through a link that drops a third of the packets each way, whoever speaks
// first, run after run. KWIK's liveness rests on QUIC's loss recovery, so nothing gives up
// while packets still get through.
func TestHandshakeAndTransferWithPacketLoss(t *testing.T) {
	data := make([]byte, 5000)
	pattern(data, 7)
	for _, speaker := range []string{"client speaks first", "server speaks first"} {
		t.Run(speaker, func(t *testing.T) {
			runs := lossRuns(t)
			for i := range runs {
				if err := lossRun(speaker == "client speaks first", data); err != nil {
					t.Fatalf("run %d of %d: %v", i+1, runs, err)
				}
			}
			t.Logf("%d of %d runs passed", runs, runs)
		})
	}
}

// lossRun is one handshake and transfer through a lossy proxy (5 ms each way).
func lossRun(clientFirst bool, data []byte) error {
	ln, err := Listen("127.0.0.1:0", testTLS.server, nil)
	if err != nil {
		return err
	}
	defer ln.Close()
	px, stop, err := startProxy(ln.Addr(), dropOneThird(), 5*time.Millisecond)
	if err != nil {
		return err
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	accepted := acceptOne(ctx, ln)
	c, err := Dial(ctx, px.LocalAddr().String(), testTLS.client, nil)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		return errors.New("no session accepted")
	}
	defer s.Close()
	sender, receiver := Session(c), s
	if !clientFirst {
		sender, receiver = s, c
	}
	str, err := sender.OpenUniStream()
	if err != nil {
		return err
	}
	werr := make(chan error, 1)
	go func() {
		_, err := str.Write(data)
		if err == nil {
			err = str.Close()
		}
		werr <- err
	}()
	in, err := receiver.AcceptUniStream(ctx)
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	got, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(got, data) {
		return errors.New("data corrupted")
	}
	return <-werr
}
