package kwik

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/kwik-go/kwik/internal/wire"
	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// hostile is a raw quic-go client that speaks KWIK's handshake by hand and then whatever a
// test makes it say.
type hostile struct {
	conn *quic.Conn
	cs   *quic.Stream
	r    *wire.Reader
	srv  *session
}

func dialHostile(t *testing.T, serverConf *Config, params *pb.TransportParameters) *hostile {
	t.Helper()
	ln := listen(t, serverConf)
	ctx := testContext(t)
	tc := testTLS.client.Clone()
	tc.NextProtos = []string{ALPN}
	conn, err := quic.DialAddr(ctx, ln.Addr().String(), tc, &quic.Config{MaxIncomingUniStreams: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	cs, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFrame(cs, &pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{Version: 1, Params: params}}}); err != nil {
		t.Fatal(err)
	}
	r := wire.NewReader(cs, 1<<20)
	f, err := readFrame(r)
	if err != nil || !f.GetAuthenticationResponse().GetSuccess() {
		t.Fatal(err, f)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &hostile{conn: conn, cs: cs, r: r, srv: s.(*session)}
}

func (h *hostile) send(t *testing.T, fs ...*pb.ControlFrame) {
	t.Helper()
	if _, err := h.cs.Write(frames(fs...)); err != nil {
		t.Fatal(err)
	}
}

// flood is send for frames the victim may stop reading part way: it closes the session at the
// first frame past its limits, and the rest of the write then fails. The caller checks how the
// session ended (waitClosed).
func (h *hostile) flood(fs ...*pb.ControlFrame) {
	_, _ = h.cs.Write(frames(fs...))
}

func (h *hostile) waitClosed(t *testing.T) error {
	t.Helper()
	select {
	case <-h.srv.Context().Done():
	case <-testContext(t).Done():
		t.Fatal("the session survived")
	}
	return context.Cause(h.srv.Context())
}

// Resetting streams the application never accepted must not return their credit: the peer
// stays within its stream limit and the accept queue stays bounded.
func TestHostileResetFloodStaysWithinLimit(t *testing.T) {
	h := dialHostile(t, &Config{MaxIncomingStreams: 100}, nil)
	go io.Copy(io.Discard, h.cs)
	var fs []*pb.ControlFrame
	for i := uint64(0); i < 1000; i++ {
		fs = append(fs,
			&pb.ControlFrame{Payload: &pb.ControlFrame_StreamReset{StreamReset: &pb.StreamReset{LogicalStreamId: 4 * i}}},
			&pb.ControlFrame{Payload: &pb.ControlFrame_StopSending{StopSending: &pb.StopSending{LogicalStreamId: 4 * i}}})
	}
	h.flood(fs...) // the session ends part way (below): the write may fail
	if err := h.waitClosed(t); !errors.Is(err, ErrStreamCreateFailed) {
		t.Fatalf("session ended with %v, want KWIK_STREAM_CREATE_FAILED", err)
	}
	m := h.srv.streams
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.kinds[dirBidi].accept) > 100 || m.kinds[dirBidi].maxRemote != 100 {
		t.Fatalf("accept queue %d, limit %d: credit returned for streams nobody accepted", len(m.kinds[dirBidi].accept), m.kinds[dirBidi].maxRemote)
	}
}

// Heartbeats cost the receiver nothing to queue.
func TestHostileHeartbeatFlood(t *testing.T) {
	h := dialHostile(t, nil, nil)
	var fs []*pb.ControlFrame
	for i := range 20000 {
		fs = append(fs, &pb.ControlFrame{Payload: &pb.ControlFrame_Heartbeat{Heartbeat: &pb.Heartbeat{Sequence: uint64(i)}}})
	}
	h.send(t, fs...)
	// A stream announced after the flood is accepted: the flood was read, and answered with nothing.
	h.send(t, &pb.ControlFrame{Payload: &pb.ControlFrame_StreamCreateNotification{StreamCreateNotification: &pb.StreamCreateNotification{LogicalStreamId: 0}}})
	if _, err := h.srv.AcceptStream(testContext(t)); err != nil {
		t.Fatal(err)
	}
	w := h.srv.primary.ctrl
	w.mu.Lock()
	n := len(w.frames)
	w.mu.Unlock()
	if n > 10 {
		t.Fatalf("%d control frames queued after a heartbeat flood", n)
	}
}

// A STOP_SENDING for a stream whose Write is held up inside QUIC (the peer reads no data)
// must not stall the control reader.
func TestHostileStopSendingWhileWriteBlocked(t *testing.T) {
	h := dialHostile(t, &Config{StreamsPerRealStream: 1}, &pb.TransportParameters{StreamReceiveWindow: 1 << 30})
	ctx := testContext(t)
	b, _ := h.srv.OpenStream()
	a, _ := h.srv.OpenStream()
	b.Write([]byte{1})
	written := make(chan error, 1)
	go func() { _, err := a.Write(make([]byte, 64<<20)); written <- err }()
	// Wait until a's real stream exists and is stuck: QUIC flow control stops it.
	waitFor(t, func() bool { return h.srv.primary.pool.size() == 2 && h.srv.primary.stats.bytesSent.Load() > 128<<10 })
	b.Close()
	h.send(t,
		&pb.ControlFrame{Payload: &pb.ControlFrame_StopSending{StopSending: &pb.StopSending{LogicalStreamId: a.StreamID(), ErrorCode: 1}}},
		&pb.ControlFrame{Payload: &pb.ControlFrame_StreamCreateNotification{StreamCreateNotification: &pb.StreamCreateNotification{LogicalStreamId: 0}}})
	if _, err := h.srv.AcceptStream(ctx); err != nil {
		t.Fatalf("control reader stalled: %v", err)
	}
	a.CancelWrite(2) // returns at once, though a's Write is still inside QUIC
	h.srv.Close()
	<-written
}

// Tiny frames sprayed across a window are cut off before they cost quadratic time.
func TestFragmentedStreamRejected(t *testing.T) {
	p := newPair(t, nil, nil)
	st, err := p.client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	s := p.client.streams.streams[st.StreamID()]
	one := []byte{1}
	var ferr error
	for i := uint64(1 << 15); i > 0 && ferr == nil; i-- {
		ferr = s.handleFrame(s.path, 2*i+1, one, false)
	}
	if !errors.Is(ferr, ErrInvalidFrame) {
		t.Fatalf("fragmented frames: %v, want KWIK_INVALID_FRAME", ferr)
	}
	s.recv.mu.Lock()
	n := s.recv.buf.Received().Len()
	s.recv.mu.Unlock()
	if n > maxRangesPerStream+1 {
		t.Fatalf("%d ranges held", n)
	}
	if err := p.client.Context().Err(); err != nil {
		t.Fatalf("session closed during the test: %v", context.Cause(p.client.Context()))
	}
}

// One MaxStreams raising the limit by several lets every waiter through.
func TestOpenStreamSyncWakesAllWaiters(t *testing.T) {
	p := newPair(t, nil, nil)
	p.client.streams.mu.Lock()
	p.client.streams.kinds[dirBidi].maxLocal = 0
	p.client.streams.mu.Unlock()
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := p.client.OpenStreamSync(ctx)
			errs <- err
		}()
	}
	p.client.streams.handleMaxStreams(3, dirBidi)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
