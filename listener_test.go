package kwik

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/wire"
	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// Closing a Listener leaves the sessions it accepted open, as quic-go's does, and frees its
// socket once the last of them has ended: the port can be bound again.
func TestListenerCloseReleasesSocket(t *testing.T) {
	p := newPair(t, nil, nil)
	addr := p.ln.Addr().(*net.UDPAddr)
	if err := p.ln.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	st, err := p.client.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("after the listener closed")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	sst, err := p.server.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(sst); err != nil || string(b) != "after the listener closed" {
		t.Fatalf("the accepted session read %q, %v", b, err)
	}
	if c, err := net.ListenUDP("udp", addr); err == nil {
		c.Close()
		t.Fatal("the listener's socket was freed while a session it accepted was open")
	}
	p.client.Close()
	p.server.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c, err := net.ListenUDP("udp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the listener's socket is still bound 10 s after its last session ended: %v", err)
		}
	}
}

// A listener takes no 0-RTT data, whatever QUIC.Allow0RTT says (its QUIC listener is an early
// one, for the session it offers in 0.5-RTT data): a client resuming a TLS session is not
// told it may send early, and its connection does not use 0-RTT.
func TestListenerTakesNo0RTT(t *testing.T) {
	ln := listen(t, &Config{QUIC: &quic.Config{Allow0RTT: true}})
	ctx := testContext(t)
	tc := testTLS.client.Clone()
	tc.NextProtos = []string{ALPN}
	cache := &signalingCache{ClientSessionCache: tls.NewLRUClientSessionCache(4), put: make(chan struct{}, 8)}
	tc.ClientSessionCache = cache
	for i := range 2 {
		conn, err := quic.DialAddrEarly(ctx, ln.Addr().String(), tc, &quic.Config{})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-conn.HandshakeComplete():
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		if st := conn.ConnectionState(); st.Used0RTT {
			t.Fatalf("connection %d used 0-RTT", i)
		}
		if i == 0 {
			select { // the server's session ticket, which the next connection resumes
			case <-cache.put:
			case <-ctx.Done():
				t.Fatal("no session ticket")
			}
		}
		conn.CloseWithError(0, "")
	}
}

// signalingCache is a TLS client session cache that says when it stores a session ticket.
type signalingCache struct {
	tls.ClientSessionCache
	put chan struct{}
}

func (c *signalingCache) Put(key string, cs *tls.ClientSessionState) {
	c.ClientSessionCache.Put(key, cs)
	if cs != nil {
		select {
		case c.put <- struct{}{}:
		default:
		}
	}
}

// A client that takes no stream of the server's (a client written before the offer may say
// so in QUIC's parameters) opens its session as before: request, then the answer on its own
// control stream.
func TestClientTakingNoOffer(t *testing.T) {
	ln := listen(t, nil)
	ctx := testContext(t)
	tc := testTLS.client.Clone()
	tc.NextProtos = []string{ALPN}
	conn, err := quic.DialAddr(ctx, ln.Addr().String(), tc, &quic.Config{MaxIncomingStreams: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	cs, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFrame(cs, &pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{Version: protocolVersion}}}); err != nil {
		t.Fatal(err)
	}
	f, err := readFrame(wire.NewReader(cs, 1<<20))
	if err != nil || !f.GetAuthenticationResponse().GetSuccess() {
		t.Fatalf("answer %v, %v", f, err)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.ID() != f.GetAuthenticationResponse().GetSessionId() {
		t.Fatalf("accepted session %s, answered %s", s.ID(), f.GetAuthenticationResponse().GetSessionId())
	}
}
