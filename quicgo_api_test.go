// Tests ported from quic-go v0.65.0's integrationtests/self (stream_test.go, datagram_test.go,
// handshake_test.go) to KWIK's API, over real UDP on loopback. quic-go is distributed under
// the MIT licence, whose notice is reproduced in quicgo_timeout_test.go: Copyright (c) 2016
// the quic-go authors & Google, Inc.

package kwik

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/quic-go/quic-go"
)

// Port of TestUnidirectionalStreams: 500 unidirectional streams each way, more than the peer
// allows at once (OpenUniStreamSync waits for its MaxStreams), each with its own data.
func TestUnidirectionalStreams(t *testing.T) {
	const numStreams = 500
	dataForStream := func(id uint64) []byte {
		b := make([]byte, 10*int(id/4))
		pattern(b, id)
		return b
	}
	runSendingPeer := func(ctx context.Context, conn Session) error {
		var wg sync.WaitGroup
		errs := make(chan error, numStreams)
		for range numStreams {
			str, err := conn.OpenUniStreamSync(ctx)
			if err != nil {
				return err
			}
			wg.Go(func() {
				if _, err := str.Write(dataForStream(str.StreamID())); err != nil {
					errs <- err
					return
				}
				errs <- str.Close()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}
	runReceivingPeer := func(ctx context.Context, conn Session) error {
		var wg sync.WaitGroup
		errs := make(chan error, numStreams)
		for range numStreams {
			str, err := conn.AcceptUniStream(ctx)
			if err != nil {
				return err
			}
			wg.Go(func() {
				data, err := io.ReadAll(str)
				if err == nil && !bytes.Equal(data, dataForStream(str.StreamID())) {
					err = fmt.Errorf("stream %d: data mismatch", str.StreamID())
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}
	for _, dir := range []string{"client -> server", "server -> client"} {
		t.Run(dir, func(t *testing.T) {
			p := newPair(t, nil, nil)
			ctx := testContext(t)
			sender, receiver := Session(p.client), Session(p.server)
			if dir == "server -> client" {
				sender, receiver = receiver, sender
			}
			errChan := make(chan error, 1)
			go func() { errChan <- runSendingPeer(ctx, sender) }()
			if err := runReceivingPeer(ctx, receiver); err != nil {
				t.Fatal(err)
			}
			if err := <-errChan; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A unidirectional stream has one half: IDs as quic-go numbers them, and the half it lacks
// fails rather than waits.
func TestUnidirectionalStreamHalves(t *testing.T) {
	p := newPair(t, nil, nil)
	ctx := testContext(t)
	for i, want := range []uint64{2, 6} {
		str, err := p.client.OpenUniStream()
		if err != nil {
			t.Fatal(err)
		}
		if str.StreamID() != want {
			t.Fatalf("client uni stream %d has ID %d, want %d", i, str.StreamID(), want)
		}
		if _, err := str.(Stream).Read(make([]byte, 1)); err == nil {
			t.Fatal("Read on a send-only stream succeeded")
		}
		if _, err := str.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		str.Close()
		in, err := p.server.AcceptUniStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if in.StreamID() != want {
			t.Fatalf("server accepted ID %d, want %d", in.StreamID(), want)
		}
		if _, err := in.(Stream).Write([]byte("x")); err == nil {
			t.Fatal("Write on a receive-only stream succeeded")
		}
		if b, err := io.ReadAll(in); err != nil || string(b) != "x" {
			t.Fatalf("read %q, %v", b, err)
		}
	}
	if str, err := p.server.OpenUniStream(); err != nil || str.StreamID() != 3 {
		t.Fatalf("server's first uni stream: %v, %v; want ID 3", str, err)
	}
	if str, err := p.server.OpenStream(); err != nil || str.StreamID() != 1 {
		t.Fatalf("server's first bidi stream: %v, %v; want ID 1", str, err)
	}
}

// Port of TestDatagramNegotiation: datagrams travel on the primary path when both sides enable
// them, and ConnectionState reports each side's support.
func TestDatagramNegotiation(t *testing.T) {
	for _, tc := range []struct{ server, client bool }{{true, true}, {true, false}, {false, true}, {false, false}} {
		t.Run(fmt.Sprintf("server %t, client %t", tc.server, tc.client), func(t *testing.T) {
			p := newPair(t, &Config{QUIC: &quic.Config{EnableDatagrams: tc.client}}, &Config{QUIC: &quic.Config{EnableDatagrams: tc.server}})
			ctx := testContext(t)
			serverState := p.server.ConnectionState().SupportsDatagrams
			clientState := p.client.ConnectionState().SupportsDatagrams
			if serverState.Local != tc.server || serverState.Remote != tc.client || clientState.Local != tc.client || clientState.Remote != tc.server {
				t.Fatalf("server sees %+v, client sees %+v", serverState, clientState)
			}
			if tc.client {
				if err := p.server.SendDatagram([]byte("foo")); err != nil {
					t.Fatal(err)
				}
				if b, err := p.client.ReceiveDatagram(ctx); err != nil || string(b) != "foo" {
					t.Fatalf("client received %q, %v", b, err)
				}
			} else if err := p.server.SendDatagram([]byte("foo")); err == nil {
				t.Fatal("SendDatagram to a client without datagrams succeeded")
			}
			if tc.server {
				if err := p.client.SendDatagram([]byte("bar")); err != nil {
					t.Fatal(err)
				}
				if b, err := p.server.ReceiveDatagram(ctx); err != nil || string(b) != "bar" {
					t.Fatalf("server received %q, %v", b, err)
				}
			} else if err := p.client.SendDatagram([]byte("bar")); err == nil {
				t.Fatal("SendDatagram to a server without datagrams succeeded")
			}
		})
	}
}

// As TestDatagramSizeLimit: a datagram too large for a packet fails with quic-go's error.
func TestDatagramTooLarge(t *testing.T) {
	conf := &Config{QUIC: &quic.Config{EnableDatagrams: true}}
	p := newPair(t, conf, conf)
	err := p.client.SendDatagram(bytes.Repeat([]byte("a"), 2000))
	var sizeErr *quic.DatagramTooLargeError
	if !errors.As(err, &sizeErr) {
		t.Fatalf("SendDatagram of 2000 bytes: %v, want a *quic.DatagramTooLargeError", err)
	}
}

// Port of TestALPN, with HandshakeComplete: ConnectionState is the primary path's, so the
// negotiated protocol and the peer's certificates are visible on both sides; a client whose
// protocols the server does not speak fails the TLS handshake.
func TestALPN(t *testing.T) {
	p := newPair(t, nil, nil)
	for name, s := range map[string]*session{"client": p.client, "server": p.server} {
		select {
		case <-s.HandshakeComplete():
		default:
			t.Fatalf("%s: HandshakeComplete not closed", name)
		}
		if got := s.ConnectionState().TLS.NegotiatedProtocol; got != ALPN {
			t.Fatalf("%s negotiated %q, want %q", name, got, ALPN)
		}
	}
	if len(p.client.ConnectionState().TLS.PeerCertificates) == 0 {
		t.Fatal("the client sees no server certificate")
	}
	tlsConf := testTLS.client.Clone()
	tlsConf.NextProtos = []string{"foobar"}
	_, err := Dial(testContext(t), p.ln.Addr().String(), tlsConf, nil)
	var transportErr *quic.TransportError
	if !errors.As(err, &transportErr) || !transportErr.ErrorCode.IsCryptoError() || !strings.Contains(err.Error(), "no application protocol") {
		t.Fatalf("Dial with an unknown ALPN: %v", err)
	}
}

// The stream settings of Config.QUIC apply to logical streams; those KWIK cannot honour are
// refused with an error that names them, never ignored.
func TestQUICConfigStreamSettings(t *testing.T) {
	t.Run("stream limits", func(t *testing.T) {
		p := newPair(t, nil, &Config{QUIC: &quic.Config{MaxIncomingStreams: 2, MaxIncomingUniStreams: 1}})
		for range 2 {
			if _, err := p.client.OpenStream(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := p.client.OpenStream(); !errors.As(err, new(*quic.StreamLimitReachedError)) {
			t.Fatalf("third bidirectional stream: %v, want the stream limit", err)
		}
		if _, err := p.client.OpenUniStream(); err != nil {
			t.Fatal(err)
		}
		if _, err := p.client.OpenUniStream(); !errors.As(err, new(*quic.StreamLimitReachedError)) {
			t.Fatalf("second unidirectional stream: %v, want the stream limit", err)
		}
	})
	t.Run("windows", func(t *testing.T) {
		c, err := (&Config{QUIC: &quic.Config{InitialStreamReceiveWindow: 100 << 10, MaxStreamReceiveWindow: 1 << 20, MaxConnectionReceiveWindow: 4 << 20}}).populate()
		if err != nil {
			t.Fatal(err)
		}
		if c.StreamReceiveWindow != 1<<20 || c.MaxSessionReceiveWindow != 4<<20 || c.initialStreamWindow() != 100<<10 {
			t.Fatalf("stream window %d, session window %d, initial %d", c.StreamReceiveWindow, c.MaxSessionReceiveWindow, c.initialStreamWindow())
		}
		// The real connections' windows are KWIK's, open from the start (realStreamWindow).
		if q := c.QUIC; q.MaxStreamReceiveWindow != realStreamWindow || q.InitialStreamReceiveWindow != realStreamWindow ||
			q.MaxConnectionReceiveWindow != realConnWindow || q.InitialConnectionReceiveWindow != realConnWindow {
			t.Fatalf("real streams' windows %d/%d, connection's %d/%d: the logical streams' were passed to quic-go, or quic-go's auto-tuning kept",
				q.InitialStreamReceiveWindow, q.MaxStreamReceiveWindow, q.InitialConnectionReceiveWindow, q.MaxConnectionReceiveWindow)
		}
		// A window of 100 bytes, as in quic-go's TestWriteWithLimitStreamFlowControl: the
		// data still flows, 100 bytes of credit at a time.
		tiny := &Config{QUIC: &quic.Config{InitialStreamReceiveWindow: 100, MaxStreamReceiveWindow: 100}}
		p := newPair(t, tiny, tiny)
		ctx := testContext(t)
		str, err := p.client.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 1000)
		pattern(data, 3)
		go func() {
			str.Write(data)
			str.Close()
		}()
		in, err := p.server.AcceptStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(in); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, %v", len(got), err)
		}
	})
	for name, q := range map[string]*quic.Config{
		"InitialConnectionReceiveWindow":   {InitialConnectionReceiveWindow: 100},
		"RequireStreamCreditRelease":       {RequireStreamCreditRelease: true},
		"EnableStreamResetPartialDelivery": {EnableStreamResetPartialDelivery: true},
		"GetConfigForClient":               {GetConfigForClient: func(*quic.ClientInfo) (*quic.Config, error) { return nil, nil }},
		"MaxIncomingStreams":               {MaxIncomingStreams: -1},
	} {
		t.Run("refused "+name, func(t *testing.T) {
			_, err := Listen("127.0.0.1:0", testTLS.server, &Config{QUIC: q})
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("Listen: %v, want an error naming %s", err, name)
			}
		})
	}
	t.Run("conflict", func(t *testing.T) {
		_, err := Listen("127.0.0.1:0", testTLS.server, &Config{MaxIncomingStreams: 5, QUIC: &quic.Config{MaxIncomingStreams: 6}})
		if err == nil || !strings.Contains(err.Error(), "MaxIncomingStreams") {
			t.Fatalf("Listen: %v, want an error naming MaxIncomingStreams", err)
		}
	})
}
