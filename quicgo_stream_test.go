// Tests ported from quic-go v0.65.0's integrationtests/self (stream_test.go,
// handshake_test.go, close_test.go, handshake_context_test.go) to KWIK's API, over real UDP on
// loopback. quic-go is distributed under the MIT licence, whose notice is reproduced in
// quicgo_timeout_test.go: Copyright (c) 2016 the quic-go authors & Google, Inc.

package kwik

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/quic-go/quic-go"
)

// Port of TestStreamWriteAfterClose: after Close, the stream's context ends with
// quic.ErrStreamClosed, and so does Write, which is not a session error.
func TestStreamWriteAfterClose(t *testing.T) {
	p := newPair(t, nil, nil)
	ctx := testContext(t)
	str, err := p.client.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write([]byte("foobar")); err != nil {
		t.Fatal(err)
	}
	if err := str.Close(); err != nil {
		t.Fatal(err)
	}
	if err := context.Cause(str.Context()); !errors.Is(err, quic.ErrStreamClosed) {
		t.Fatalf("context.Cause after Close: %v, want quic.ErrStreamClosed", err)
	}
	_, err = str.Write([]byte("foo"))
	if !errors.Is(err, quic.ErrStreamClosed) {
		t.Fatalf("Write after Close: %v, want quic.ErrStreamClosed", err)
	}
	if errors.Is(err, net.ErrClosed) {
		t.Fatal("closing a stream closed the session")
	}
	serverStr, err := p.server.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(serverStr)
	if err != nil || string(data) != "foobar" {
		t.Fatalf("read %q, %v", data, err)
	}
}

// The stream limit's error is quic-go's, a pointer, as quic-go's OpenStream returns it.
func TestStreamLimitReachedError(t *testing.T) {
	p := newPair(t, nil, &Config{MaxIncomingStreams: 1})
	if _, err := p.client.OpenStream(); err != nil {
		t.Fatal(err)
	}
	_, err := p.client.OpenStream()
	if !errors.As(err, new(*quic.StreamLimitReachedError)) {
		t.Fatalf("OpenStream past the limit: %v (%T), want a *quic.StreamLimitReachedError", err, err)
	}
	if !errors.Is(err, &quic.StreamLimitReachedError{}) && !errors.Is(err, ErrStreamLimit) {
		t.Fatalf("OpenStream past the limit: %v is not ErrStreamLimit", err)
	}
}

// dialN dials n sessions to ln and closes them when the test ends.
func dialN(t *testing.T, ctx context.Context, ln *Listener, n int) []Session {
	t.Helper()
	var out []Session
	for range n {
		c, err := Dial(ctx, ln.Addr().String(), testTLS.client, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		out = append(out, c)
	}
	return out
}

// requireRefused checks quic-go's refusal: a *quic.TransportError CONNECTION_REFUSED.
func requireRefused(t *testing.T, err error) {
	t.Helper()
	var transportErr *quic.TransportError
	if !errors.As(err, &transportErr) || transportErr.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("%v (%T), want a *quic.TransportError CONNECTION_REFUSED", err, err)
	}
}

// Port of TestServerAcceptQueueOverflow: past the accept queue's size, new sessions are refused
// as quic-go refuses connections; accepting one makes room for one more.
func TestServerAcceptQueueOverflow(t *testing.T) {
	ln := listen(t, nil)
	ctx := testContext(t)
	dialN(t, ctx, ln, acceptQueueLen)
	waitFor(t, func() bool { return len(ln.queue) == acceptQueueLen })

	_, err := Dial(ctx, ln.Addr().String(), testTLS.client, nil)
	requireRefused(t, err)

	// accept one session to free up a spot
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dialN(t, ctx, ln, 1)
	waitFor(t, func() bool { return len(ln.queue) == acceptQueueLen })
	_, err = Dial(ctx, ln.Addr().String(), testTLS.client, nil)
	requireRefused(t, err)
	for len(ln.queue) > 0 {
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

// Port of TestDrainServerAcceptQueue: after Close, Accept still returns the sessions queued,
// alive, and then ErrServerClosed.
func TestDrainServerAcceptQueue(t *testing.T) {
	ln := listen(t, nil)
	ctx := testContext(t)
	conns := dialN(t, ctx, ln, acceptQueueLen)
	waitFor(t, func() bool { return len(ln.queue) == acceptQueueLen })

	// The server queues each session when its own handshake goroutine ends, so the queue's
	// order need not be the order of the Dials: each accepted session is matched with its
	// client by session ID.
	byID := make(map[string]Session, len(conns))
	for _, c := range conns {
		byID[c.ID()] = c
	}
	ln.Close()
	for range acceptQueueLen {
		c, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		client := byID[c.ID()]
		if client == nil {
			t.Fatalf("accepted session %s, which no Dial made", c.ID())
		}
		if err := context.Cause(client.Context()); err != nil {
			t.Fatalf("client session closed: %v", err)
		}
		if err := context.Cause(c.Context()); err != nil {
			t.Fatalf("server session closed: %v", err)
		}
		c.CloseWithError(0, "")
	}
	if _, err := ln.Accept(ctx); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Accept after draining: %v, want ErrServerClosed", err)
	}
}

type ctxKey struct{}

// As TestConnContextOnServerSide checks for quic-go's server side: the session's context and
// its streams' carry the values of the context the session was made with (here Dial's), and
// end, with the session's close error as their cause, when the session does.
func TestSessionContextCarriesDialValues(t *testing.T) {
	ln := listen(t, nil)
	ctx := testContext(t)
	accepted := acceptOne(ctx, ln)
	c, err := Dial(context.WithValue(ctx, ctxKey{}, "bar"), ln.Addr().String(), testTLS.client, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.Fatal("no session accepted")
	}
	defer s.Close()
	str, err := c.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	for name, cctx := range map[string]context.Context{"session": c.Context(), "stream": str.Context()} {
		if v, _ := cctx.Value(ctxKey{}).(string); v != "bar" {
			t.Fatalf("%s context: value %q, want bar", name, v)
		}
	}
	s.CloseWithError(1337, "bye")
	for name, cctx := range map[string]context.Context{"session": c.Context(), "stream": str.Context()} {
		waitDone(t, ctx, name, cctx)
		var appErr *quic.ApplicationError
		if err := context.Cause(cctx); !errors.As(err, &appErr) || appErr.ErrorCode != 1337 {
			t.Fatalf("%s context's cause: %v, want the application error 1337", name, err)
		}
	}
}
