package kwik

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/jointoken"
	"github.com/kwik-go/kwik/internal/wire"
	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The hostile-peer suite: raw quic-go peers that speak KWIK by hand and break one rule each,
// against each role (TestHostileClients attacks a listener, TestHostilePrimaries a client
// from the server it dialed, TestHostileSecondaries a client from a server its primary
// added). Every violation ends the attacked session, or for a secondary the attacked path,
// with the KWIK code the protocol gives it, seen on both ends of the wire, within
// hostileBound; what the protocol allows (duplicate bytes, ignorable or droppable floods,
// joins the client refuses) costs bounded memory and no error. Meanwhile honest traffic keeps
// flowing, checked byte by byte, during the attacks and after: a session of the attacked
// listener, a session of the attacked client's process, or the attacked session's primary
// path, respectively.
//
// Cases covered elsewhere, not repeated here:
//   - TestHostileResetFloodStaysWithinLimit: resets flooding new stream IDs (STREAM_CREATE_FAILED);
//   - TestHostileHeartbeatFlood: a heartbeat flood costs nothing to queue;
//   - TestHostileStopSendingWhileWriteBlocked: STOP_SENDING must not stall the control reader;
//   - TestFragmentedStreamRejected: tiny frames sprayed across a window (INVALID_FRAME);
//   - TestSecondaryOutOfPlaceFrames: a secondary writing to a stream it has no delegation on,
//     and resetting a client stream (the path ends, the session stays);
//   - TestDelegationOutsideRange: a secondary writing just before its range;
//   - TestSecondaryFragmentationCostsItsPath: a secondary fragmenting its own range;
//   - TestJoinRejectedToken, TestJoinRejectedByKey and security_test.go: join tokens.

// hostileBound is how long a victim may take to end: a hang detector, not a performance
// threshold (the cases end in milliseconds).
const hostileBound = 30 * time.Second

// hostileQUIC lets the engine open its data streams towards a raw peer.
var hostileQUIC = &quic.Config{MaxIncomingUniStreams: 64}

// rawPeer is one end of a QUIC connection that speaks KWIK by hand.
type rawPeer struct {
	conn   *quic.Conn
	cs     *quic.Stream // the control stream
	r      *wire.Reader // reads cs
	uni    *quic.SendStream
	nextPN uint64 // next DataPacket ID
}

func rawTLS(server bool) *tls.Config {
	if server {
		c := testTLS.server.Clone()
		c.NextProtos = []string{ALPN}
		return c
	}
	c := testTLS.client.Clone()
	c.NextProtos = []string{ALPN}
	return c
}

// dialRaw opens a QUIC connection to a KWIK listener, and nothing else.
func dialRaw(t *testing.T, addr string) *rawPeer {
	t.Helper()
	conn, err := quic.DialAddr(testContext(t), addr, rawTLS(false), hostileQUIC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return &rawPeer{conn: conn}
}

// port is the UDP port of the peer's end, by which a listener's sessions are told apart.
func (h *rawPeer) port() int { return h.conn.LocalAddr().(*net.UDPAddr).Port }

// openControl opens the control stream (client side).
func (h *rawPeer) openControl(t *testing.T) {
	t.Helper()
	cs, err := h.conn.OpenStreamSync(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	h.cs, h.r = cs, wire.NewReader(cs, 1<<20)
}

// authenticate opens a session as an honest client would.
func (h *rawPeer) authenticate(t *testing.T) {
	t.Helper()
	h.openControl(t)
	h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{Version: protocolVersion}}})
	f := h.next(t, func(f *pb.ControlFrame) bool { return f.GetAuthenticationResponse() != nil })
	if !f.GetAuthenticationResponse().GetSuccess() {
		t.Fatalf("authentication refused: %v", f)
	}
}

// write writes b on the control stream. Errors are ignored: the victim may close the
// connection mid-write, and how it closed it is what the cases check.
func (h *rawPeer) write(b []byte) { _, _ = h.cs.Write(b) }

func (h *rawPeer) send(fs ...*pb.ControlFrame) { h.write(frames(fs...)) }

// offer writes b on a stream the raw server opens: where a client opening a session reads the
// session the server offers.
func (h *rawPeer) offer(t *testing.T, b []byte) {
	t.Helper()
	os, err := h.conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = os.Write(b)
	_ = os.Close()
}

// open offers a client the session sid with path pathID, and answers its request with it.
func (h *rawPeer) open(t *testing.T, sid, pathID string) {
	t.Helper()
	h.offer(t, frames(authOK(sid, pathID)))
	h.send(authOK(sid, pathID))
}

// data writes b on the peer's data stream, opened on first use.
func (h *rawPeer) data(t *testing.T, b []byte) {
	t.Helper()
	if h.uni == nil {
		uni, err := h.conn.OpenUniStreamSync(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		h.uni = uni
	}
	_, _ = h.uni.Write(b)
}

// packet returns a DataPacket message with the peer's next packet ID.
func (h *rawPeer) packet(fs ...wire.DataFrame) []byte {
	b := wire.AppendDataPacketMessage(nil, &wire.DataPacket{PacketID: h.nextPN, Frames: fs})
	h.nextPN++
	return b
}

// next reads control frames until one matches.
func (h *rawPeer) next(t *testing.T, match func(*pb.ControlFrame) bool) *pb.ControlFrame {
	t.Helper()
	stop := context.AfterFunc(boundContext(t), func() { h.cs.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		f, err := readFrame(h.r)
		if err != nil {
			t.Fatalf("reading the victim's control stream: %v", err)
		}
		if match(f) {
			return f
		}
	}
}

// closedWith waits for the victim to close the connection and returns why, as KWIK reports it.
func (h *rawPeer) closedWith(t *testing.T) error {
	t.Helper()
	select {
	case <-h.conn.Context().Done():
	case <-boundContext(t).Done():
		t.Fatal("the victim kept the connection open")
	}
	return closeError(context.Cause(h.conn.Context()))
}

// listenRaw listens for QUIC connections from KWIK clients: a hostile server.
func listenRaw(t *testing.T) *quic.Listener {
	t.Helper()
	ql, err := quic.ListenAddr("127.0.0.1:0", rawTLS(true), hostileQUIC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ql.Close() })
	return ql
}

// acceptRaw accepts a KWIK client's connection and reads its authentication request.
func acceptRaw(t *testing.T, ql *quic.Listener) (*rawPeer, *pb.AuthenticationRequest) {
	t.Helper()
	ctx := boundContext(t)
	conn, err := ql.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	cs, err := conn.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := &rawPeer{conn: conn, cs: cs, r: wire.NewReader(cs, 1<<20)}
	req := h.next(t, func(*pb.ControlFrame) bool { return true }).GetAuthenticationRequest()
	if req == nil {
		t.Fatal("the client did not authenticate first")
	}
	return h, req
}

func authOK(sessionID, pathID string) *pb.ControlFrame {
	return &pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationResponse{AuthenticationResponse: &pb.AuthenticationResponse{
		Success: true, SessionId: sessionID, PathId: pathID,
	}}}
}

func boundContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), hostileBound)
	t.Cleanup(cancel)
	return ctx
}

// endedWith waits for a session to end and returns why.
func endedWith(t *testing.T, s *session) error {
	t.Helper()
	select {
	case <-s.Context().Done():
	case <-boundContext(t).Done():
		t.Fatal("the victim session survived")
	}
	return context.Cause(s.Context())
}

// acceptBounded accepts the victim's next stream, whose reads fail after hostileBound.
func acceptBounded(t *testing.T, v *session) Stream {
	t.Helper()
	st, err := v.AcceptStream(boundContext(t))
	if err != nil {
		t.Fatal(err)
	}
	st.SetReadDeadline(time.Now().Add(hostileBound))
	return st
}

// detected says whether err is the KWIK error want, found by the side that returns it (the
// attacker never closes anything: the victim must have seen the violation itself).
func detected(err, want error) bool {
	var ke *Error
	return errors.Is(err, want) && errors.As(err, &ke) && !ke.Remote
}

// frames returns control frames as they travel: each prefixed by its length.
func frames(fs ...*pb.ControlFrame) []byte {
	var b []byte
	for _, f := range fs {
		var err error
		if b, err = wire.AppendControlFrame(b, f); err != nil {
			panic(err)
		}
	}
	return b
}

// message returns body prefixed by its length.
func message(body []byte) []byte {
	return append(protowire.AppendVarint(nil, uint64(len(body))), body...)
}

// prefix is a lone length prefix announcing n bytes.
func prefix(n uint64) []byte { return protowire.AppendVarint(nil, n) }

// garbage is a message whose body is no protobuf message at all: a varint tag that runs
// past ten bytes.
var garbage = message(bytes.Repeat([]byte{0xff}, 16))

// malformedPrefix is a length varint longer than ten bytes.
var malformedPrefix = append(bytes.Repeat([]byte{0x80}, 11), 1)

// unknownFrame is a ControlFrame with a frame ID and a payload field no version defines.
var unknownFrame = message(protowire.AppendBytes(protowire.AppendTag(
	protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 7),
	99, protowire.BytesType), []byte("from a future version")))

// wrongWireType is a ControlFrame whose heartbeat field is a varint, not a message.
var wrongWireType = message(protowire.AppendVarint(protowire.AppendTag(nil, 19, protowire.VarintType), 1))

func heartbeat() *pb.ControlFrame {
	return &pb.ControlFrame{Payload: &pb.ControlFrame_Heartbeat{Heartbeat: &pb.Heartbeat{}}}
}

func streamCreate(id uint64) *pb.ControlFrame {
	return &pb.ControlFrame{Payload: &pb.ControlFrame_StreamCreateNotification{StreamCreateNotification: &pb.StreamCreateNotification{LogicalStreamId: id}}}
}

func frame(id, off uint64, b []byte, fin bool) wire.DataFrame {
	return wire.DataFrame{StreamID: id, Offset: off, Data: b, Fin: fin}
}

// honestFlow is the honest traffic that runs while hostile peers attack: one stream from a
// server to its client, written as fast as the test allows it (extend, advance) and checked
// byte by byte as it is read.
type honestFlow struct {
	client, server *session
	streamID       uint64
	wg             sync.WaitGroup

	mu       sync.Mutex
	target   int64 // bytes the writer may send
	received int64 // bytes read and checked
	stopped  bool  // the writer closes the stream once it reaches target
	eof      bool
	err      error
	changed  chan struct{} // closed and replaced at every change of the fields above
}

func startHonestFlow(t *testing.T, server, client *session) *honestFlow {
	t.Helper()
	ctx := testContext(t)
	f := &honestFlow{client: client, server: server, changed: make(chan struct{})}
	st, err := server.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.streamID = st.StreamID()
	// A first byte, so that the client learns of the stream whatever else it is told.
	f.target = 1
	accepted := make(chan error, 1)
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		var off int64
		for {
			f.mu.Lock()
			for off == f.target && !f.stopped && f.err == nil {
				ch := f.changed
				f.mu.Unlock()
				select {
				case <-ch:
				case <-server.Context().Done():
					f.fail(context.Cause(server.Context()))
					return
				}
				f.mu.Lock()
			}
			target, stopped, failed := f.target, f.stopped, f.err != nil
			f.mu.Unlock()
			switch {
			case failed:
				return
			case off == target && stopped:
				if err := st.Close(); err != nil {
					f.fail(err)
				}
				return
			}
			n := min(target-off, 64<<10)
			if _, err := st.Write(content(off, n)); err != nil {
				f.fail(fmt.Errorf("honest write: %w", err))
				return
			}
			off += n
		}
	}()
	go func() {
		defer f.wg.Done()
		cs, err := client.AcceptStream(ctx)
		accepted <- err
		if err != nil {
			f.fail(err)
			return
		}
		buf := make([]byte, 64<<10)
		for {
			n, err := cs.Read(buf)
			f.mu.Lock()
			if n > 0 && !bytes.Equal(buf[:n], content(f.received, int64(n))) {
				err = fmt.Errorf("honest stream corrupted in [%d, %d)", f.received, f.received+int64(n))
			}
			f.received += int64(n)
			f.broadcastLocked()
			f.mu.Unlock()
			if err == io.EOF {
				f.mu.Lock()
				f.eof = true
				f.broadcastLocked()
				f.mu.Unlock()
				return
			}
			if err != nil {
				f.fail(err)
				return
			}
		}
	}()
	t.Cleanup(func() {
		server.Close()
		client.Close()
		f.wg.Wait()
	})
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *honestFlow) broadcastLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *honestFlow) fail(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.broadcastLocked()
	f.mu.Unlock()
}

// extend lets the writer send n more bytes.
func (f *honestFlow) extend(n int64) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.target += n
	f.broadcastLocked()
	return f.target
}

// advance lets the writer send n more bytes and waits until the client has read and checked
// everything up to there.
func (f *honestFlow) advance(t *testing.T, n int64) {
	t.Helper()
	want := f.extend(n)
	ctx := boundContext(t)
	f.mu.Lock()
	for f.received < want && f.err == nil {
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("the honest flow stalled at %d bytes of %d", f.received, want)
		}
		f.mu.Lock()
	}
	err := f.err
	f.mu.Unlock()
	if err != nil {
		t.Fatalf("honest flow: %v", err)
	}
}

// finish closes the honest stream once everything allowed is written and checks that the
// client read all of it, and that neither side of the honest session ended.
func (f *honestFlow) finish(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	f.stopped = true
	f.broadcastLocked()
	f.mu.Unlock()
	f.wg.Wait()
	if f.err != nil || !f.eof {
		t.Fatalf("honest flow: %d bytes, eof %v, %v", f.received, f.eof, f.err)
	}
	if f.received != f.target {
		t.Fatalf("honest flow: read %d bytes of %d", f.received, f.target)
	}
	for _, s := range []*session{f.client, f.server} {
		if s.Context().Err() != nil {
			t.Fatalf("the honest %v session ended: %v", s.Role(), context.Cause(s.Context()))
		}
	}
	t.Logf("honest flow: %d bytes transferred byte-exact during and after the attacks", f.received)
}

// ---- hostile clients: the victim is a listener and the sessions it accepts ----

// sessionRouter accepts a listener's sessions and hands each to the case whose raw peer
// opened it, told apart by the peer's port: the cases run in parallel.
type sessionRouter struct {
	mu    sync.Mutex
	slots map[int]chan *session
}

func routeSessions(t *testing.T, ln *Listener) *sessionRouter {
	r := &sessionRouter{slots: make(map[int]chan *session)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			s, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			r.slot(s.RemoteAddr().(*net.UDPAddr).Port) <- s.(*session)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, ch := range r.slots {
			select {
			case s := <-ch:
				s.Close()
			default:
			}
		}
	})
	return r
}

func (r *sessionRouter) slot(port int) chan *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := r.slots[port]
	if ch == nil {
		ch = make(chan *session, 1)
		r.slots[port] = ch
	}
	return ch
}

// session returns the session the listener accepted from h.
func (r *sessionRouter) session(t *testing.T, h *rawPeer) *session {
	t.Helper()
	select {
	case s := <-r.slot(h.port()):
		t.Cleanup(func() { s.Close() })
		return s
	case <-boundContext(t).Done():
		t.Fatal("the listener surfaced no session")
		return nil
	}
}

// surfaced reports whether the listener accepted a session from h.
func (r *sessionRouter) surfaced(h *rawPeer) bool { return len(r.slot(h.port())) > 0 }

type clientAttack struct {
	name string
	// preAuth cases attack before authenticating, and return the session the listener
	// surfaced for them, if any; the others get the victim authenticated.
	preAuth bool
	attack  func(t *testing.T, h *rawPeer, victim *session, r *sessionRouter) *session
	want    error // the code the victim ends with; nil: it survives (the case checks how)
}

// listenerConf is the attacked listener's configuration. Heartbeats are slow so that a raw
// peer's silence never ends a case; the handshake timeout is what the case of a peer that
// never authenticates waits for.
var listenerConf = &Config{HandshakeTimeout: 2 * time.Second, HeartbeatInterval: 10 * time.Second, PathTimeout: time.Minute}

var clientAttacks = []clientAttack{
	{name: "garbage on the control stream", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.write(garbage)
		return v
	}},
	{name: "garbage on a data stream", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.data(t, garbage)
		return v
	}},
	{name: "length prefix longer than ten bytes", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.write(malformedPrefix)
		return v
	}},
	{name: "length one above the maximum on the control stream", want: ErrPacketTooLarge, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.write(prefix(defaultMaxMessageSize + 1))
		return v
	}},
	{name: "length of 2^62 on a data stream", want: ErrPacketTooLarge, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.data(t, prefix(1<<62))
		return v
	}},
	{name: "control stream ending inside a message", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.write(append(prefix(100), make([]byte, 10)...))
		h.cs.Close()
		return v
	}},
	{name: "data stream ending inside a message", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.data(t, h.packet(frame(0, 0, []byte("abc"), false))[:5])
		h.uni.Close()
		return v
	}},
	{name: "unknown frame type", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.write(unknownFrame)
		return v
	}},
	{name: "known frame with the wrong wire type", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.write(wrongWireType)
		return v
	}},
	{name: "second authentication request", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{Version: protocolVersion}}})
		return v
	}},
	{name: "ADD_PATH from the client", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_AddPathRequest{AddPathRequest: &pb.AddPathRequest{TargetAddress: "127.0.0.1:1", SessionId: v.ID(), PathId: randomID(8)}}})
		return v
	}},
	{name: "delegation assigned to the primary", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegationAssign{DelegationAssign: &pb.DelegationAssign{LogicalStreamId: 1, Length: 10}}})
		return v
	}},
	{name: "data for a stream the server never opened", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.data(t, h.packet(frame(1, 0, []byte("x"), false)))
		return v
	}},
	{name: "reset of a stream the server never opened", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_StreamReset{StreamReset: &pb.StreamReset{LogicalStreamId: 3}}})
		return v
	}},
	{name: "credit for a stream the server never opened", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_MaxStreamData{MaxStreamData: &pb.MaxStreamData{LogicalStreamId: 5, Maximum: 1 << 40}}})
		return v
	}},
	{name: "data for a stream beyond the limit", want: ErrStreamCreateFailed, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.data(t, h.packet(frame(4*defaultMaxIncomingStreams, 0, []byte("x"), false)))
		return v
	}},
	{name: "data beyond the stream credit", want: ErrFlowControl, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.data(t, h.packet(frame(0, defaultStreamReceiveWindow-1, []byte("xy"), false)))
		return v
	}},
	{name: "offset overflowing 64 bits", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.data(t, h.packet(frame(0, math.MaxUint64-1, []byte("xyz"), false)))
		return v
	}},
	{name: "final size changed", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.data(t, append(h.packet(frame(0, 0, []byte("0123456789"), true)), h.packet(frame(0, 20, nil, true))...))
		return v
	}},
	{name: "data beyond the final size", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.data(t, append(h.packet(frame(0, 0, nil, true)), h.packet(frame(0, 0, []byte("x"), false))...))
		return v
	}},
	{name: "final size below received data", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.data(t, append(h.packet(frame(0, 0, make([]byte, 100), false)), h.packet(frame(0, 50, nil, true))...))
		return v
	}},
	{name: "reset with a final size below received data", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.data(t, h.packet(frame(0, 0, make([]byte, 100), false)))
		// The control frame may overtake the data: the victim must have stored it first.
		st := acceptBounded(t, v)
		if _, err := io.ReadFull(st, make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_StreamReset{StreamReset: &pb.StreamReset{LogicalStreamId: 0, FinalSize: 50}}})
		return v
	}},
	{name: "ack for a packet never sent", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_Ack{Ack: &pb.AckFrame{Ranges: []*pb.AckRange{{First: 0, Last: 1 << 20}}}}})
		return v
	}},
	{
		// Same bytes again are taken idempotently; different bytes at offsets already
		// received are dropped: the first copy wins (RecvBuffer.Write), so a duplicate can
		// neither change what was delivered nor what is buffered, and costs no error.
		name: "duplicated and overlapping offsets", want: nil,
		attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
			a, b := bytes.Repeat([]byte("a"), 100), bytes.Repeat([]byte("b"), 100)
			var pkts []byte
			for _, f := range []wire.DataFrame{
				frame(0, 0, a, false),
				frame(0, 0, a, false),                               // the same bytes again
				frame(0, 0, b, false),                               // different bytes, same offsets
				frame(0, 50, bytes.Repeat([]byte("c"), 100), false), // half old, half new
				frame(0, 150, nil, true),
			} {
				pkts = append(pkts, h.packet(f)...)
			}
			h.data(t, pkts)
			st := acceptBounded(t, v)
			got, err := io.ReadAll(st)
			if want := string(a) + strings.Repeat("c", 50); err != nil || string(got) != want {
				t.Fatalf("read %q, %v; want %q", got, err, want)
			}
			return v
		},
	},
	{
		// Relayed data the server cannot queue is dropped and counted (Config.MaxPendingRawData),
		// and frames about unknown paths, delegations or raw messages are ignored: a flood
		// of them is allowed traffic that costs bounded memory, not an error.
		name: "flood of raw data and stale replies", want: nil,
		attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
			var fs []*pb.ControlFrame
			payload := make([]byte, 1000)
			for i := range 5000 {
				fs = append(fs,
					&pb.ControlFrame{Payload: &pb.ControlFrame_RawPacketTransmission{RawPacketTransmission: &pb.RawPacketTransmission{Data: payload, TargetPathId: v.primary.id}}},
					&pb.ControlFrame{Payload: &pb.ControlFrame_PathStatusNotification{PathStatusNotification: &pb.PathStatusNotification{PathId: randomID(8), Status: pb.PathStatus_DEAD}}},
					&pb.ControlFrame{Payload: &pb.ControlFrame_AddPathResponse{AddPathResponse: &pb.AddPathResponse{PathId: randomID(8), Success: true}}},
					&pb.ControlFrame{Payload: &pb.ControlFrame_DelegationStatus{DelegationStatus: &pb.DelegationStatus{DelegationId: uint64(i), Complete: true}}},
					&pb.ControlFrame{Payload: &pb.ControlFrame_RawPacketResult{RawPacketResult: &pb.RawPacketResult{Id: uint64(i)}}})
			}
			h.send(append(fs, streamCreate(0))...)
			// The stream announced after the flood is accepted: the flood was read.
			acceptBounded(t, v)
			v.raw.mu.Lock()
			held, dropped := v.raw.bytes, v.raw.dropped
			v.raw.mu.Unlock()
			if held > v.conf.MaxPendingRawData || dropped == 0 {
				t.Fatalf("raw queue holds %d bytes (bound %d), dropped %d", held, v.conf.MaxPendingRawData, dropped)
			}
			return v
		},
	},
	{
		// See the hostile primaries' case of the same name.
		name: "token request naming a long path ID, answered briefly", want: nil,
		attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
			h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_PathTokenRequest{PathTokenRequest: &pb.PathTokenRequest{PathId: strings.Repeat("f", 32<<10)}}})
			answer := h.next(t, func(f *pb.ControlFrame) bool { return f.GetPathTokenResponse() != nil })
			if n := proto.Size(answer); n > 1024 {
				t.Fatalf("answered with %d bytes", n)
			}
			return v
		},
	},
	{
		// The primary answers every token request; a client that reads none of the answers
		// fills its control queue, which ends the session instead of growing.
		name: "flood of token requests, answers unread", want: &Error{Code: CodeInternal},
		attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
			var fs []*pb.ControlFrame
			for range 4096 {
				fs = append(fs, &pb.ControlFrame{Payload: &pb.ControlFrame_PathTokenRequest{PathTokenRequest: &pb.PathTokenRequest{PathId: randomID(8)}}})
			}
			flood := frames(fs...)
			ctx := boundContext(t)
			for v.Context().Err() == nil && ctx.Err() == nil {
				h.write(flood)
			}
			return v
		},
	},
	{
		name: "unknown field beside a known payload", want: nil,
		attack: func(t *testing.T, h *rawPeer, v *session, _ *sessionRouter) *session {
			hb := frames(streamCreate(0))
			hb = message(protowire.AppendBytes(protowire.AppendTag(hb[1:], 99, protowire.BytesType), []byte("skipped")))
			h.write(hb)
			acceptBounded(t, v)
			return v
		},
	},
	{
		name: "garbage instead of the authentication request", preAuth: true, want: ErrInvalidFrame,
		attack: func(t *testing.T, h *rawPeer, _ *session, _ *sessionRouter) *session {
			h.openControl(t)
			h.write(garbage)
			return nil
		},
	},
	{
		name: "malformed length prefix instead of the authentication request", preAuth: true, want: ErrInvalidFrame,
		attack: func(t *testing.T, h *rawPeer, _ *session, _ *sessionRouter) *session {
			h.openControl(t)
			h.write(malformedPrefix)
			return nil
		},
	},
	{
		name: "control stream closed before the authentication request", preAuth: true, want: ErrInvalidFrame,
		attack: func(t *testing.T, h *rawPeer, _ *session, _ *sessionRouter) *session {
			h.openControl(t)
			h.cs.Close()
			return nil
		},
	},
	{
		name: "oversized authentication request", preAuth: true, want: ErrPacketTooLarge,
		attack: func(t *testing.T, h *rawPeer, _ *session, _ *sessionRouter) *session {
			h.openControl(t)
			h.write(prefix(1 << 40))
			return nil
		},
	},
	{
		name: "unsupported version", preAuth: true, want: ErrAuthFailed,
		attack: func(t *testing.T, h *rawPeer, _ *session, _ *sessionRouter) *session {
			h.openControl(t)
			h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{Version: 2}}})
			return nil
		},
	},
	{
		name: "message size out of range", preAuth: true, want: ErrInvalidFrame,
		attack: func(t *testing.T, h *rawPeer, _ *session, _ *sessionRouter) *session {
			h.openControl(t)
			h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{
				Version: protocolVersion, Params: &pb.TransportParameters{MaxMessageSize: 100},
			}}})
			return nil
		},
	},
	{
		// Data streams are not accepted before authentication: QUIC holds their bytes
		// (bounded by its flow control) and the handshake fails on the first control frame.
		name: "data before authentication, then a frame other than authentication", preAuth: true, want: ErrInvalidFrame,
		attack: func(t *testing.T, h *rawPeer, _ *session, _ *sessionRouter) *session {
			h.data(t, h.packet(frame(0, 0, []byte("early"), false)))
			h.openControl(t)
			h.send(streamCreate(0))
			return nil
		},
	},
	{
		// Data sent before authenticating is read only once the session exists, and checked
		// like any other: here it names a stream beyond the limit.
		name: "data before authentication, then authentication", preAuth: true, want: ErrStreamCreateFailed,
		attack: func(t *testing.T, h *rawPeer, _ *session, r *sessionRouter) *session {
			h.data(t, h.packet(frame(4*defaultMaxIncomingStreams, 0, []byte("early"), false)))
			h.openControl(t)
			// (No waiting for the answer: the session may end before the peer reads it.)
			h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{Version: protocolVersion}}})
			return r.session(t, h)
		},
	},
	{
		// A peer that never authenticates is given up after the handshake timeout; its data
		// streams were never read.
		name: "data before authentication, and no authentication", preAuth: true, want: ErrAuthFailed,
		attack: func(t *testing.T, h *rawPeer, _ *session, _ *sessionRouter) *session {
			h.data(t, h.packet(frame(0, 0, []byte("early"), false)))
			return nil
		},
	},
}

// TestHostileClients attacks one listener from raw QUIC clients, one rule broken per case,
// while an honest session of that listener streams.
func TestHostileClients(t *testing.T) {
	ln := listen(t, listenerConf)
	client, server := dialListener(t, ln, listenerConf)
	flow := startHonestFlow(t, server, client)
	r := routeSessions(t, ln)
	t.Run("attacks", func(t *testing.T) {
		for _, tc := range clientAttacks {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				flow.extend(256 << 10) // streams during the attack
				h := dialRaw(t, ln.Addr().String())
				var victim *session
				if !tc.preAuth {
					h.authenticate(t)
					victim = r.session(t, h)
				}
				victim = tc.attack(t, h, victim, r)
				switch {
				case tc.want == nil:
					if victim.Context().Err() != nil {
						t.Fatalf("the session ended: %v", context.Cause(victim.Context()))
					}
				default:
					if victim != nil {
						if err := endedWith(t, victim); !detected(err, tc.want) {
							t.Fatalf("the victim ended with %v, want %v detected by itself", err, tc.want)
						}
					}
					if err := h.closedWith(t); !errors.Is(err, tc.want) {
						t.Fatalf("the victim closed the connection with %v, want %v", err, tc.want)
					}
					if victim == nil && r.surfaced(h) {
						t.Fatal("the listener accepted a session for an attack before authentication")
					}
				}
				flow.advance(t, 256<<10) // and after
			})
		}
	})
	flow.finish(t)
}

// dialListener opens an honest session with the listener ln.
func dialListener(t *testing.T, ln *Listener, conf *Config) (client, server *session) {
	t.Helper()
	ctx := testContext(t)
	accepted := make(chan Session, 1)
	go func() {
		s, _ := ln.Accept(ctx) // nil on error
		accepted <- s
	}()
	c, err := Dial(ctx, ln.Addr().String(), testTLS.client, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := <-accepted
	if s == nil {
		t.Fatal("no session accepted")
	}
	t.Cleanup(func() { s.Close() })
	return c.(*session), s.(*session)
}

// ---- hostile primaries: the victim is a client session ----

type primaryAttack struct {
	name string
	// early, if set, runs before h answers the client's authentication.
	early func(t *testing.T, h *rawPeer)
	// attack, if set, runs once the victim has authenticated with h, a raw server that
	// claimed session sid; ql is h's listener, which a second connection may reach.
	attack func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener)
	want   error // the code the victim ends with; nil: it survives (the case checks how)
}

// victimConf is the attacked client's configuration: slow heartbeats, so that a raw peer's
// silence ends no case; the handshake timeout bounds the join of a target that never answers.
var victimConf = &Config{HandshakeTimeout: 2 * time.Second, HeartbeatInterval: 10 * time.Second, PathTimeout: time.Minute}

func addPathRequest(target, sid, pathID string, token []byte) *pb.ControlFrame {
	return &pb.ControlFrame{Payload: &pb.ControlFrame_AddPathRequest{AddPathRequest: &pb.AddPathRequest{
		TargetAddress: target, SessionId: sid, PathId: pathID, JoinToken: token,
	}}}
}

func isAddPathResponse(f *pb.ControlFrame) bool { return f.GetAddPathResponse() != nil }

// digestRange is a DelegateRange of stream 1 with these digests.
func digestRange(length uint64, digests []byte, block uint64) *pb.ControlFrame {
	return &pb.ControlFrame{Payload: &pb.ControlFrame_DelegateRange{DelegateRange: &pb.DelegateRange{
		LogicalStreamId: 1, Length: length, PathId: randomID(8), Digests: digests, DigestBlockSize: block,
	}}}
}

var primaryAttacks = []primaryAttack{
	{name: "garbage on the control stream", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.write(garbage)
	}},
	{name: "garbage on a data stream", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.data(t, garbage)
	}},
	{name: "length one above the maximum", want: ErrPacketTooLarge, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.write(prefix(defaultMaxMessageSize + 1))
	}},
	{name: "length prefix longer than ten bytes on a data stream", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.data(t, malformedPrefix)
	}},
	{name: "unknown frame type", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.write(unknownFrame)
	}},
	{name: "second authentication response", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.send(authOK(sid, randomID(8)))
	}},
	{name: "delegation done from the primary", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegationDone{DelegationDone: &pb.DelegationDone{}}})
	}},
	{name: "data for a stream the client never opened", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.data(t, h.packet(frame(0, 0, []byte("x"), false)))
	}},
	{name: "data for a stream beyond the limit", want: ErrStreamCreateFailed, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.data(t, h.packet(frame(4*defaultMaxIncomingStreams+1, 0, []byte("x"), false)))
	}},
	{name: "data beyond the stream credit", want: ErrFlowControl, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.data(t, h.packet(frame(1, defaultStreamReceiveWindow, []byte("x"), false)))
	}},
	{name: "ack for a packet never sent", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_Ack{Ack: &pb.AckFrame{Ranges: []*pb.AckRange{{First: 5, Last: 5}}}}})
	}},
	{name: "empty delegated range", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegateRange{DelegateRange: &pb.DelegateRange{LogicalStreamId: 1, PathId: randomID(8)}}})
	}},
	// Digests that cannot be those of the range's blocks (docs/PROTOCOL.md section 14): not
	// whole SHA-256 digests, one too few, a block size of 0 or above the client's initial
	// stream window, a block size without digests.
	{name: "delegated range with a partial digest", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.send(digestRange(100, make([]byte, 31), 100))
	}},
	{name: "delegated range with a digest too few", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.send(digestRange(100, make([]byte, 32), 99))
	}},
	{name: "delegated range with digests and no block size", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.send(digestRange(100, make([]byte, 32), 0))
	}},
	{name: "delegated range with a digest block above the window", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		w := v.conf.initialStreamWindow()
		h.send(digestRange(w+1, make([]byte, 32), w+1))
	}},
	{name: "delegated range with a block size and no digests", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.send(digestRange(100, nil, 100))
	}},
	{name: "delegation on a stream the client never opened", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegateRange{DelegateRange: &pb.DelegateRange{LogicalStreamId: 0, Length: 10, PathId: randomID(8)}}})
	}},
	{
		// Data written before the authentication response is read once the path exists, and
		// checked like any other.
		name: "data before authentication", want: ErrStreamCreateFailed,
		early: func(t *testing.T, h *rawPeer) {
			h.data(t, h.packet(frame(4*defaultMaxIncomingStreams+1, 0, []byte("early"), false)))
		},
	},
	{
		// See the client suite: the first copy wins, without error.
		name: "duplicated and overlapping offsets", want: nil,
		attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
			var pkts []byte
			for _, f := range []wire.DataFrame{
				frame(1, 0, []byte("0123456789"), false),
				frame(1, 0, []byte("0123456789"), false),
				frame(1, 5, []byte("XXXXXXXXXX"), false),
				frame(1, 15, nil, true),
			} {
				pkts = append(pkts, h.packet(f)...)
			}
			h.data(t, pkts)
			st := acceptBounded(t, v)
			if got, err := io.ReadAll(st); err != nil || string(got) != "0123456789XXXXX" {
				t.Fatalf("read %q, %v", got, err)
			}
		},
	},
	{
		// The client refuses, per request, and the session goes on: a refused join is the
		// primary's business (AddPathResponse), not a protocol violation.
		name: "ADD_PATH naming another session or a malformed path", want: nil,
		attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
			for _, req := range []*pb.ControlFrame{
				addPathRequest(ql.Addr().String(), randomID(16), randomID(8), nil),
				addPathRequest(ql.Addr().String(), sid, "not a path ID", nil),
				addPathRequest(ql.Addr().String(), sid, v.primary.id, nil), // the primary path's own ID
			} {
				h.send(req)
				resp := h.next(t, isAddPathResponse).GetAddPathResponse()
				if resp.Success || resp.ErrorCode == pb.ErrorCode_NO_ERROR {
					t.Fatalf("%v answered %v", req, resp)
				}
			}
		},
	},
	{
		// A primary may name its own address: the client joins it as a secondary, and the
		// path then has a secondary's rights only. Writing into the primary's stream from
		// there costs the path (KWIK_OFFSET_MISMATCH), not the session.
		name: "ADD_PATH at the primary's own address", want: nil,
		attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
			h.data(t, h.packet(frame(1, 0, []byte("hello"), false)))
			pathID, token := randomID(8), []byte("any token: the secondary checks it")
			h.send(addPathRequest(ql.Addr().String(), sid, pathID, token))
			h2, req := acceptRaw(t, ql)
			if req.SessionId != sid || req.PathId != pathID || !bytes.Equal(req.Credentials, token) {
				t.Fatalf("join request %v", req)
			}
			h2.send(authOK(sid, pathID))
			if resp := h.next(t, isAddPathResponse).GetAddPathResponse(); !resp.Success || resp.PathId != pathID {
				t.Fatalf("AddPathResponse %v", resp)
			}
			h2.data(t, h2.packet(frame(1, 5, []byte(" evil"), false)))
			if err := h2.closedWith(t); !errors.Is(err, ErrOffsetMismatch) {
				t.Fatalf("the client closed the secondary path with %v, want KWIK_OFFSET_MISMATCH", err)
			}
			st := h.next(t, func(f *pb.ControlFrame) bool { return f.GetPathStatusNotification() != nil }).GetPathStatusNotification()
			if st.PathId != pathID || st.Status != pb.PathStatus_DEAD {
				t.Fatalf("path status %v", st)
			}
			h.data(t, h.packet(frame(1, 5, []byte(" world"), true)))
			cs := acceptBounded(t, v)
			if got, err := io.ReadAll(cs); err != nil || string(got) != "hello world" {
				t.Fatalf("read %q, %v", got, err)
			}
		},
	},
	{
		// Ranges for a path still joining are held, within the secondary's own bounds: past
		// 1024 the client refuses at once (and the session goes on); once the join ends, the
		// secondary receives the held ones in the order they came.
		name: "DELEGATE_RANGE flood for a path still joining", want: nil,
		attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
			h.data(t, h.packet(frame(1, 0, []byte("hello"), false)))
			acceptBounded(t, v)
			pathID := randomID(8)
			h.send(addPathRequest(ql.Addr().String(), sid, pathID, []byte("a token")))
			h2, _ := acceptRaw(t, ql) // not answered yet: the join waits
			const held = maxSecondaryDelegations
			var fs []*pb.ControlFrame
			for i := range uint64(held + 1) {
				fs = append(fs, &pb.ControlFrame{Payload: &pb.ControlFrame_DelegateRange{DelegateRange: &pb.DelegateRange{
					DelegationId: i + 1, LogicalStreamId: 1, Offset: 5 + 10*i, Length: 10, PathId: pathID,
				}}})
			}
			h.send(fs...)
			st := h.next(t, func(f *pb.ControlFrame) bool { return f.GetDelegationStatus() != nil }).GetDelegationStatus()
			if st.DelegationId != held+1 || st.ErrorCode != pb.ErrorCode(CodePacketTooLarge) {
				t.Fatalf("first status %v, want the range past the bound refused (KWIK_PACKET_TOO_LARGE)", st)
			}
			h2.send(authOK(sid, pathID))
			for want := uint64(1); want <= 3; want++ {
				a := h2.next(t, func(f *pb.ControlFrame) bool { return f.GetDelegationAssign() != nil }).GetDelegationAssign()
				if a.DelegationId != want {
					t.Fatalf("assignment %d handed over after the join, want %d (in order)", a.DelegationId, want)
				}
			}
		},
	},
	{
		// The secondary must answer for the session and path it was asked for.
		name: "ADD_PATH at the primary's own address, answered for another session", want: nil,
		attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
			pathID := randomID(8)
			h.send(addPathRequest(ql.Addr().String(), sid, pathID, nil))
			h2, _ := acceptRaw(t, ql)
			h2.send(authOK(randomID(16), pathID))
			resp := h.next(t, isAddPathResponse).GetAddPathResponse()
			if resp.Success || resp.ErrorCode != pb.ErrorCode(CodeAuthFailed) {
				t.Fatalf("AddPathResponse %v, want KWIK_AUTH_FAILED", resp)
			}
			if err := h2.closedWith(t); !errors.Is(err, ErrAuthFailed) {
				t.Fatalf("the client closed the join with %v, want KWIK_AUTH_FAILED", err)
			}
		},
	},
	{
		// The client never listens on its socket: a join to itself finds nobody, fails
		// after HandshakeTimeout, and is reported as a refused path.
		name: "ADD_PATH at the client itself", want: nil,
		attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
			self := net.JoinHostPort("127.0.0.1", fmt.Sprint(v.LocalAddr().(*net.UDPAddr).Port))
			pathID := randomID(8)
			h.send(addPathRequest(self, sid, pathID, nil))
			resp := h.next(t, isAddPathResponse).GetAddPathResponse()
			if resp.Success || resp.ErrorCode == pb.ErrorCode_NO_ERROR {
				t.Fatalf("AddPathResponse %v", resp)
			}
			t.Logf("join of the client itself refused with %v: %s", ErrorCode(resp.ErrorCode), resp.ErrorMessage)
			if pi, ok := pathByID(v.GetDeadPaths(), pathID); !ok || pi.Address != self {
				t.Fatalf("dead paths %v", v.GetDeadPaths())
			}
		},
	},
	{
		// An answer must not carry back what the request named at any length: answers
		// are what a primary that reads none of them piles up in the client's control queue,
		// whose bound counts frames.
		name: "requests naming long path IDs, answered briefly", want: nil,
		attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
			long := strings.Repeat("f", 32<<10)
			h.data(t, h.packet(frame(1, 0, []byte("x"), false)))
			for _, req := range []*pb.ControlFrame{
				addPathRequest("127.0.0.1:1", sid, long, nil),
				{Payload: &pb.ControlFrame_RemovePathRequest{RemovePathRequest: &pb.RemovePathRequest{PathId: long}}},
				{Payload: &pb.ControlFrame_RawPacketTransmission{RawPacketTransmission: &pb.RawPacketTransmission{TargetPathId: long}}},
				{Payload: &pb.ControlFrame_DelegateRange{DelegateRange: &pb.DelegateRange{LogicalStreamId: 1, Offset: 1, Length: 10, PathId: long}}},
			} {
				h.send(req)
				answer := h.next(t, func(f *pb.ControlFrame) bool {
					return f.GetHeartbeat() == nil && f.GetAck() == nil && f.GetMaxStreamData() == nil
				})
				if n := proto.Size(answer); n > 1024 {
					t.Fatalf("a %T was answered with %d bytes", req.Payload, n)
				}
			}
		},
	},
	{
		// Each join the client makes is a record in its path history, however fast it fails:
		// the history, and the addresses it holds, must stay bounded whatever the primary asks.
		name: "flood of ADD_PATH to unresolvable addresses", want: nil,
		attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
			long := "127.0.0.1:" + strings.Repeat("9", 32<<10) // no port: the dial fails at once
			for sent := 0; sent < 2*maxPathHistory; {
				n := min(defaultMaxPaths-1, 2*maxPathHistory-sent) // within MaxPaths, so that each is dialed
				for i := range n {
					addr := "127.0.0.1:notaport"
					if i == 0 {
						addr = long
					}
					h.send(addPathRequest(addr, sid, randomID(8), nil))
				}
				for range n {
					if resp := h.next(t, isAddPathResponse).GetAddPathResponse(); resp.Success {
						t.Fatalf("AddPathResponse %v", resp)
					}
				}
				sent += n
			}
			var records, bytes int
			v.inspect(func() {
				records = len(v.paths.records)
				for _, r := range v.paths.records {
					bytes += len(r.address) + len(r.reason)
				}
			})
			if records > maxPathHistory || bytes > maxPathHistory*(maxAddressLen+1024) {
				t.Fatalf("the client holds %d path records, %d bytes of addresses and reasons", records, bytes)
			}
		},
	},
	{
		// Every relay request is answered; a primary that makes the client answer without
		// reading the answers fills the client's control queue, which ends the session
		// instead of growing.
		name: "flood of requests, answers unread", want: &Error{Code: CodeInternal},
		attack: func(t *testing.T, h *rawPeer, v *session, sid string, ql *quic.Listener) {
			// Each request for another session is refused with an AddPathResponse. Once QUIC
			// flow control stops the client's control writer, every further answer queues;
			// the flood goes on until the queue's bound ends the session.
			var fs []*pb.ControlFrame
			for range 4096 {
				fs = append(fs, addPathRequest("", "", "x", nil))
			}
			flood := frames(fs...)
			ctx := boundContext(t)
			for v.Context().Err() == nil && ctx.Err() == nil {
				h.write(flood)
			}
		},
	},
}

// TestHostilePrimaries has clients dial raw servers that break one rule each, while an honest
// session of the same process streams.
func TestHostilePrimaries(t *testing.T) {
	p := newPair(t, victimConf, victimConf)
	flow := startHonestFlow(t, p.server, p.client)
	t.Run("attacks", func(t *testing.T) {
		for _, tc := range primaryAttacks {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				flow.extend(256 << 10)
				ql := listenRaw(t)
				dialed := make(chan error, 1)
				var c Session
				go func() {
					var err error
					c, err = Dial(boundContext(t), ql.Addr().String(), testTLS.client, victimConf)
					dialed <- err
				}()
				h, req := acceptRaw(t, ql)
				if req.SessionId != "" || len(req.Credentials) != 0 {
					t.Fatalf("the client opened a session with %v", req)
				}
				sid := randomID(16)
				if tc.early != nil {
					tc.early(t, h)
				}
				h.open(t, sid, randomID(8))
				if err := <-dialed; err != nil {
					t.Fatal(err)
				}
				v := c.(*session)
				t.Cleanup(func() { v.Close() })
				if tc.attack != nil {
					tc.attack(t, h, v, sid, ql)
				}
				if tc.want == nil {
					if v.Context().Err() != nil {
						t.Fatalf("the session ended: %v", context.Cause(v.Context()))
					}
				} else {
					if err := endedWith(t, v); !detected(err, tc.want) {
						t.Fatalf("the victim ended with %v, want %v detected by itself", err, tc.want)
					}
					if err := h.closedWith(t); !errors.Is(err, tc.want) {
						t.Fatalf("the victim closed the connection with %v, want %v", err, tc.want)
					}
				}
				flow.advance(t, 256<<10)
			})
		}
	})
	flow.finish(t)
}

// TestHostilePrimaryHandshake: a server that answers the authentication wrongly fails Dial
// with the code of its mistake, and is closed with it.
func TestHostilePrimaryHandshake(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer []byte
		want   error
		remote bool // the server's own refusal: the client closes with no code of its own
	}{
		{"garbage", garbage, ErrInvalidFrame, false},
		{"length one above the maximum", prefix(defaultMaxMessageSize + 1), ErrPacketTooLarge, false},
		{"length prefix longer than ten bytes", malformedPrefix, ErrInvalidFrame, false},
		{"another frame", frames(heartbeat()), ErrInvalidFrame, false},
		{"malformed session ID", frames(authOK("not hex", randomID(8))), ErrInvalidFrame, false},
		{"short path ID", frames(authOK(randomID(16), randomID(4))), ErrInvalidFrame, false},
		{"message size out of range", frames(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationResponse{AuthenticationResponse: &pb.AuthenticationResponse{
			Success: true, SessionId: randomID(16), PathId: randomID(8), Params: &pb.TransportParameters{MaxMessageSize: 1 << 30},
		}}}), ErrInvalidFrame, false},
		{"refusal without a code", frames(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationResponse{AuthenticationResponse: &pb.AuthenticationResponse{}}}), ErrAuthFailed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ql := listenRaw(t)
			dialed := make(chan error, 1)
			go func() {
				c, err := Dial(boundContext(t), ql.Addr().String(), testTLS.client, victimConf)
				if err == nil {
					c.Close()
				}
				dialed <- err
			}()
			h, _ := acceptRaw(t, ql)
			h.offer(t, tc.answer)
			err := <-dialed
			var ke *Error
			if !errors.Is(err, tc.want) || !errors.As(err, &ke) || ke.Remote != tc.remote {
				t.Fatalf("Dial: %v, want %v (remote %v)", err, tc.want, tc.remote)
			}
			if err := h.closedWith(t); !tc.remote && !errors.Is(err, tc.want) {
				t.Fatalf("the client closed the connection with %v, want %v", err, tc.want)
			}
		})
	}
}

// TestHostilePrimaryAnswer: the server offered a session, and Dial returned it; the server's
// answer to the request, the control stream's first frame, then refuses it (the session ends
// with the server's error, the server closing), names another session, or is not an answer
// (the client closes with the code of the mistake).
func TestHostilePrimaryAnswer(t *testing.T) {
	sid, pathID := randomID(16), randomID(8)
	for _, tc := range []struct {
		name   string
		answer []byte
		want   error
		remote bool
	}{
		{"refusal", frames(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationResponse{AuthenticationResponse: &pb.AuthenticationResponse{
			ErrorCode: pb.ErrorCode(CodeAuthFailed), ErrorMessage: "unsupported protocol version",
		}}}), ErrAuthFailed, true},
		{"another session", frames(authOK(randomID(16), pathID)), ErrInvalidFrame, false},
		{"another path", frames(authOK(sid, randomID(8))), ErrInvalidFrame, false},
		{"another frame", frames(heartbeat()), ErrInvalidFrame, false},
		{"garbage", garbage, ErrInvalidFrame, false},
		{"none within the handshake timeout", nil, ErrAuthFailed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, h, _ := dialOffered(t, sid, pathID)
			if c.ID() != sid {
				t.Fatalf("session %s, want the offer's %s", c.ID(), sid)
			}
			if tc.answer != nil {
				h.write(tc.answer)
			}
			err := endedWith(t, c)
			var ke *Error
			if !errors.Is(err, tc.want) || !errors.As(err, &ke) || ke.Remote != tc.remote {
				t.Fatalf("the session ended with %v, want %v (remote %v)", err, tc.want, tc.remote)
			}
			if err := h.closedWith(t); !tc.remote && !errors.Is(err, tc.want) {
				t.Fatalf("the client closed the connection with %v, want %v", err, tc.want)
			}
		})
	}
}

// ---- hostile secondaries: the victim is a client's path to them ----

type secondaryAttack struct {
	name string
	// early, if set, runs before h answers the client's join.
	early func(t *testing.T, h *rawPeer, flow *honestFlow)
	// attack, if set, runs once the primary has added h, a raw server, as path pathID.
	attack func(t *testing.T, h *rawPeer, pathID string, p *pair, flow *honestFlow)
	want   error // the code the client closes the path with; nil: the path survives
}

// secondarySuiteConf: slow heartbeats, so that a raw peer's silence ends no case; no rejoins,
// so that each case sees one connection (TestViolationsAreNotRejoined covers rejoining).
func secondarySuiteConf() *Config {
	return &Config{JoinKey: testJoinKey, MaxPaths: 64, HeartbeatInterval: 10 * time.Second, PathTimeout: time.Minute, PathRetry: RetryPolicy{MaxRetries: -1}}
}

// joinHostile has the primary add a raw server, which accepts the join as an honest
// secondary would, first writing early (if any) on a data stream.
func joinHostile(t *testing.T, primary *session, early func(h *rawPeer)) (*rawPeer, string) {
	t.Helper()
	ql := listenRaw(t)
	added := make(chan error, 1)
	go func() { added <- primary.AddPath(ql.Addr().String()) }()
	h, req := acceptRaw(t, ql)
	if _, err := jointoken.Verify(testJoinKey, req.Credentials, req.SessionId, req.PathId, req.TargetAddress, time.Now()); err != nil || req.SessionId != primary.ID() {
		t.Fatalf("join request %v: %v", req, err)
	}
	if early != nil {
		early(h)
	}
	h.send(authOK(req.SessionId, req.PathId))
	if err := <-added; err != nil {
		t.Fatal(err)
	}
	return h, req.PathId
}

// delegated is a stream that the primary serves as head bytes of its own, a range of n bytes
// delegated to a secondary, and tail bytes of its own. It refills the range if the
// delegation fails.
type delegated struct {
	client Stream
	assign *pb.DelegationAssign // as the secondary received it
	result chan error           // the delegation's outcome, once refilled
	size   int64
}

func delegate(t *testing.T, p *pair, h *rawPeer, pathID string, head, n, tail int64) *delegated {
	t.Helper()
	ctx := boundContext(t)
	d := &delegated{result: make(chan error, 1), size: head + n + tail}
	go func() {
		st, err := p.server.OpenStreamSync(ctx)
		if err != nil {
			d.result <- err
			return
		}
		st.Write(content(0, head))
		dl, err := st.Delegate(pathID, n, chunkRequest(head, n))
		if err != nil {
			d.result <- err
			return
		}
		// The tail may wait for credit that only the refill brings: refill meanwhile.
		go func() {
			err := dl.Wait(ctx)
			var de *DelegationError
			if errors.As(err, &de) {
				if _, werr := st.WriteAt(content(de.Offset, de.Remaining), de.Offset); werr != nil {
					err = werr
				}
			}
			d.result <- err
		}()
		st.Write(content(head+n, tail))
		st.Close()
	}()
	cs, err := p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cs.SetReadDeadline(time.Now().Add(hostileBound))
	d.client = cs
	d.assign = h.next(t, func(f *pb.ControlFrame) bool { return f.GetDelegationAssign() != nil }).GetDelegationAssign()
	if d.assign.Offset != uint64(head) || d.assign.Length != uint64(n) || d.assign.LogicalStreamId != cs.StreamID() {
		t.Fatalf("delegation %v", d.assign)
	}
	return d
}

// check reads the whole stream, which must be exact, and returns the delegation's outcome.
func (d *delegated) check(t *testing.T) error {
	t.Helper()
	got, err := io.ReadAll(d.client)
	if err != nil || !bytes.Equal(got, content(0, d.size)) {
		t.Fatalf("the delegated stream read %d bytes (exact: %v), %v", len(got), bytes.Equal(got, content(0, d.size)), err)
	}
	return <-d.result
}

// failedFor checks that a delegation failed because its path was cut off.
func failedFor(t *testing.T, err error, pathID string) {
	t.Helper()
	var de *DelegationError
	if !errors.As(err, &de) || de.PathID != pathID {
		t.Fatalf("delegation outcome %v, want a failure of path %s", err, pathID)
	}
}

var secondaryAttacks = []secondaryAttack{
	{name: "garbage on the control stream", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
		h.write(garbage)
	}},
	{name: "garbage on a data stream", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
		h.data(t, garbage)
	}},
	{name: "length one above the maximum", want: ErrPacketTooLarge, attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
		h.write(prefix(defaultMaxMessageSize + 1))
	}},
	{name: "length of 2^62 on a data stream", want: ErrPacketTooLarge, attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
		h.data(t, prefix(1<<62))
	}},
	{name: "unknown frame type", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
		h.write(unknownFrame)
	}},
	// (A StreamReset from a secondary: TestSecondaryOutOfPlaceFrames.)
	{name: "stream announced by a secondary", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
		h.send(streamCreate(1001))
	}},
	{name: "stream limit from a secondary", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_MaxStreams{MaxStreams: &pb.MaxStreams{Maximum: 1 << 40}}})
	}},
	{name: "stop sending from a secondary", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_StopSending{StopSending: &pb.StopSending{LogicalStreamId: f.streamID}}})
	}},
	{name: "ADD_PATH from a secondary", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
		h.send(addPathRequest("127.0.0.1:1", p.client.ID(), randomID(8), nil))
	}},
	{name: "delegation from a secondary", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegateRange{DelegateRange: &pb.DelegateRange{LogicalStreamId: f.streamID, Offset: 1 << 30, Length: 10, PathId: id}}})
	}},
	{name: "ack for a packet never sent", want: ErrInvalidFrame, attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
		h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_Ack{Ack: &pb.AckFrame{Ranges: []*pb.AckRange{{First: 0, Last: 0}}}}})
	}},
	{name: "data for a stream that does not exist", want: ErrOffsetMismatch, attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
		h.data(t, h.packet(frame(1001, 0, []byte("x"), false)))
	}},
	{
		// Bytes the honest stream's reader has not reached yet: the secondary has no range
		// there, and the frame is refused whole (TestSecondaryOutOfPlaceFrames writes behind).
		name: "data ahead in a stream with no delegation", want: ErrOffsetMismatch,
		attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
			h.data(t, h.packet(frame(f.streamID, uint64(f.extend(0)), []byte("intruder"), false)))
		},
	},
	{
		name: "data before authentication", want: ErrOffsetMismatch,
		early: func(t *testing.T, h *rawPeer, f *honestFlow) {
			h.data(t, h.packet(frame(f.streamID, uint64(f.extend(0)), []byte("early"), false)))
		},
	},
	{
		name: "one byte past the end of its range", want: ErrOffsetMismatch,
		attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
			d := delegate(t, p, h, id, 1000, 4000, 1000)
			h.data(t, h.packet(frame(d.assign.LogicalStreamId, 1000, content(1000, 4001), false)))
			failedFor(t, d.check(t), id)
		},
	},
	{
		name: "fin inside its range", want: ErrOffsetMismatch,
		attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
			d := delegate(t, p, h, id, 1000, 4000, 1000)
			h.data(t, h.packet(frame(d.assign.LogicalStreamId, 1000, content(1000, 4000), true)))
			failedFor(t, d.check(t), id)
		},
	},
	{
		name: "data in its range beyond the credit it was given", want: ErrOffsetMismatch,
		attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
			d := delegate(t, p, h, id, 1000, 2*defaultStreamReceiveWindow, 1000)
			max := d.assign.MaxOffset
			h.data(t, h.packet(frame(d.assign.LogicalStreamId, max, content(int64(max), 1), false)))
			// Read only once the path is cut off: reading grants more credit, which would make
			// the byte legitimate if it arrived after.
			waitFor(t, func() bool { _, ok := pathByID(p.client.GetDeadPaths(), id); return ok })
			failedFor(t, d.check(t), id)
		},
	},
	{
		name: "more written than its range", want: ErrOffsetMismatch,
		attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
			d := delegate(t, p, h, id, 1000, 4000, 1000)
			h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegationDone{DelegationDone: &pb.DelegationDone{DelegationId: d.assign.DelegationId, Written: 4001}}})
			failedFor(t, d.check(t), id)
		},
	},
	{
		// A delegation on one stream gives no right on another.
		name: "data in a stream other than its delegation's", want: ErrOffsetMismatch,
		attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
			d := delegate(t, p, h, id, 1000, 4000, 1000)
			h.data(t, h.packet(frame(f.streamID, uint64(f.extend(0))+1000, content(1000, 4000), false)))
			failedFor(t, d.check(t), id)
		},
	},
	{
		// Inside its own range a secondary is trusted with the content, but not to rewrite
		// it: bytes already received stay (the first copy wins), duplicates cost nothing.
		name: "duplicated and overlapping offsets in its range", want: nil,
		attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
			d := delegate(t, p, h, id, 1000, 4000, 1000)
			sid := d.assign.LogicalStreamId
			var pkts []byte
			for _, fr := range []wire.DataFrame{
				frame(sid, 1000, content(1000, 3000), false),
				frame(sid, 1000, content(1000, 3000), false),
				frame(sid, 2000, bytes.Repeat([]byte{0xee}, 2500), false), // 2000 bytes already held, 500 new
				frame(sid, 4500, content(4500, 500), false),
			} {
				pkts = append(pkts, h.packet(fr)...)
			}
			h.data(t, pkts)
			got, err := io.ReadAll(d.client)
			want := content(0, 6000)
			copy(want[4000:4500], bytes.Repeat([]byte{0xee}, 500))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("read %d bytes, %v; first copy not kept", len(got), err)
			}
			if err := <-d.result; err != nil {
				t.Fatalf("delegation: %v", err)
			}
		},
	},
	{
		// Once the client holds the whole range the secondary has no right left there: even
		// a copy of bytes it sent is out of place.
		name: "duplicate after its range is complete", want: ErrOffsetMismatch,
		attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
			d := delegate(t, p, h, id, 1000, 4000, 1000)
			sid := d.assign.LogicalStreamId
			h.data(t, h.packet(frame(sid, 1000, content(1000, 4000), false)))
			if err := <-d.result; err != nil {
				t.Fatalf("delegation: %v", err)
			}
			d.result <- nil // for check
			// (Unread yet: once the client has read a stream to its end, late frames for it
			// are dropped, whoever sends them.)
			h.data(t, h.packet(frame(sid, 1000, content(1000, 4000), false)))
			if err := h.closedWith(t); !errors.Is(err, ErrOffsetMismatch) {
				t.Fatalf("the client closed the path with %v, want KWIK_OFFSET_MISMATCH", err)
			}
			d.check(t)
		},
	},
	{
		name: "flood of relay requests, answers unread", want: &Error{Code: CodeInternal},
		attack: func(t *testing.T, h *rawPeer, id string, p *pair, f *honestFlow) {
			var fs []*pb.ControlFrame
			for range 4096 {
				fs = append(fs, &pb.ControlFrame{Payload: &pb.ControlFrame_RawPacketTransmission{RawPacketTransmission: &pb.RawPacketTransmission{TargetPathId: "nowhere"}}})
			}
			flood := frames(fs...)
			ctx := boundContext(t)
			for h.conn.Context().Err() == nil && ctx.Err() == nil {
				h.write(flood)
			}
		},
	},
}

// TestHostileSecondaries has a primary add raw servers that break one rule each, while the
// session's primary path streams: each attack costs its path only.
func TestHostileSecondaries(t *testing.T) {
	p := newPair(t, secondarySuiteConf(), secondarySuiteConf())
	flow := startHonestFlow(t, p.server, p.client)
	for _, tc := range secondaryAttacks {
		t.Run(tc.name, func(t *testing.T) {
			flow.extend(256 << 10)
			var early func(h *rawPeer)
			if tc.early != nil {
				early = func(h *rawPeer) { tc.early(t, h, flow) }
			}
			h, id := joinHostile(t, p.server, early)
			if tc.attack != nil {
				tc.attack(t, h, id, p, flow)
			}
			if tc.want == nil {
				if pi, ok := pathByID(p.client.GetActivePaths(), id); !ok {
					t.Fatalf("the path is no longer active: %+v", pi)
				}
			} else {
				if err := h.closedWith(t); !errors.Is(err, tc.want) {
					t.Fatalf("the client closed the path with %v, want %v", err, tc.want)
				}
				if _, ok := pathByID(p.client.GetDeadPaths(), id); !ok {
					t.Fatalf("the client does not list the path as dead: %+v", p.client.GetAllPaths())
				}
			}
			if p.client.Context().Err() != nil {
				t.Fatalf("the session ended: %v", context.Cause(p.client.Context()))
			}
			flow.advance(t, 256<<10)
		})
	}
	flow.finish(t)
}

// A path the client cut off because its secondary broke the protocol is not rejoined (a
// silent one is: TestPathRecovery), lest the secondary be trusted with new delegations
// again, death after death.
func TestViolationsAreNotRejoined(t *testing.T) {
	conf := clientConf()
	conf.PathRetry = RetryPolicy{MaxRetries: 3, InitialBackoff: time.Millisecond}
	p := newPair(t, conf, serverConf())
	h, id := joinHostile(t, p.server, nil)
	h.write(garbage)
	if err := h.closedWith(t); !errors.Is(err, ErrInvalidFrame) {
		t.Fatalf("the client closed the path with %v, want KWIK_INVALID_FRAME", err)
	}
	if pi, _ := pathByID(p.client.GetDeadPaths(), id); !strings.Contains(pi.Reason, "not rejoined") {
		t.Fatalf("path %+v: a rejoin is under way", pi)
	}
}

// dialOffered has a KWIK client dial a raw primary, which offers it session sid with path
// pathID: the client's session (Dial returned it; closed at the test's end), the raw primary,
// and the client's authentication request, which the raw primary has not answered.
func dialOffered(t *testing.T, sid, pathID string) (*session, *rawPeer, *pb.AuthenticationRequest) {
	t.Helper()
	ql := listenRaw(t)
	dialed := make(chan Session, 1)
	go func() {
		c, err := Dial(boundContext(t), ql.Addr().String(), testTLS.client, victimConf)
		if err != nil {
			t.Error(err)
		}
		dialed <- c
	}()
	h, req := acceptRaw(t, ql)
	h.offer(t, frames(authOK(sid, pathID)))
	c := <-dialed
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { c.Close() })
	return c.(*session), h, req
}

// dialRawPrimary is dialOffered, the raw primary then answering the request with its offer.
func dialRawPrimary(t *testing.T) (*session, *rawPeer, *pb.AuthenticationRequest) {
	t.Helper()
	sid, pathID := randomID(16), randomID(8)
	c, h, req := dialOffered(t, sid, pathID)
	h.send(authOK(sid, pathID))
	return c, h, req
}

// A client opening a session says it takes delegations on streams of their own, and reads
// them: a DelegateRange on one is handled as on the control stream (this one names a path the
// client does not know: it is refused, and the primary told); any other frame there ends the
// session with KWIK_INVALID_FRAME.
func TestDelegationStreams(t *testing.T) {
	t.Run("delegation", func(t *testing.T) {
		t.Parallel()
		_, h, req := dialRawPrimary(t)
		if !req.GetParams().GetDelegationStreams() {
			t.Fatal("the client did not announce delegation streams")
		}
		h.offer(t, frames(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegateRange{DelegateRange: &pb.DelegateRange{
			DelegationId: 7, LogicalStreamId: 1, Offset: 0, Length: 100, PathId: randomID(8),
		}}}))
		f := h.next(t, func(f *pb.ControlFrame) bool { return f.GetDelegationStatus() != nil })
		if st := f.GetDelegationStatus(); st.DelegationId != 7 || st.Complete || st.ErrorCode != pb.ErrorCode(CodePathNotFound) {
			t.Fatalf("the client answered %v, want delegation 7 refused with KWIK_PATH_NOT_FOUND", st)
		}
	})
	t.Run("another frame", func(t *testing.T) {
		t.Parallel()
		c, h, _ := dialRawPrimary(t)
		h.offer(t, frames(heartbeat()))
		if err := endedWith(t, c); !errors.Is(err, ErrInvalidFrame) {
			t.Fatalf("the session ended with %v, want KWIK_INVALID_FRAME", err)
		}
	})
}
