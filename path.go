package kwik

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwik-go/kwik/internal/data"
	"github.com/kwik-go/kwik/internal/wire"
	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// path is one QUIC connection of a session with its control stream and data plane.
//
// Goroutines, all counted in the session's WaitGroup and all ending when the connection
// closes (or, for the control writer and the watchdog, when the path's context ends):
//   - readControl: reads the control stream and dispatches frames;
//   - ctrl.run: writes queued control frames, coalescing credit updates and acks, and the
//     heartbeats the watchdog asks for;
//   - acceptEach: accepts the peer's data streams and starts a readData for each; on the
//     client's primary path, another accepts the primary's delegation streams and starts a
//     readAlone for each;
//   - watch, on a client's secondary paths only: has heartbeats sent and declares the path
//     dead when its QUIC connection has received nothing for PathTimeout; fails the path's
//     delegations that miss their progress deadline (progress.go).
//
// Sending needs no goroutine: a stream's Write encodes its DataPacket and writes it on a real
// stream of the pool from the caller's goroutine.
type path struct {
	id        string
	sess      *session
	conn      *quic.Conn
	address   string
	isPrimary bool // the client's path to the primary, or the primary's own
	essential bool // the session ends with this path: every path but a client's secondaries
	peer      peerParams
	createdAt time.Time
	rec       *pathRecord // owned by the session's loop (session_loop.go)

	ctx    context.Context // ends when the path (or the session) ends
	cancel context.CancelFunc

	ctrlStream *quic.Stream
	ctrlReader *wire.Reader
	// answerDue: the server's answer to the client's authentication request is the first
	// frame to read (a session the server offered, clientAuthenticate). Set before start.
	answerDue bool
	ctrl      *controlWriter
	// roleControl handles the control frames of the session's role on this kind of path
	// (controlHandlerFor); handleControl rejects what it does not take.
	roleControl controlHandler
	pool        sendPool
	order       sendOrder // a secondary's delegated writers take turns on the path

	nextPacket atomic.Uint64 // next DataPacket ID this side sends on the path
	lastActive atomic.Int64  // Unix nanoseconds of the last message received

	// Client, secondary paths: the progress of their delegations (progress.go).
	lastDelegated atomic.Int64  // Unix nanoseconds of the last byte received for a delegation
	stalledUntil  atomic.Int64  // Unix nanoseconds until which new ranges are refused (it delivered nothing)
	progressPoke  chan struct{} // cap 1: a delegation was assigned to the path

	acks struct {
		mu       sync.Mutex
		received data.RangeSet // packet IDs received and not yet acknowledged
		pending  bool
	}

	stats struct {
		bytesSent, bytesReceived     atomic.Uint64 // DataPacket bytes, length prefix included
		packetsSent, packetsReceived atomic.Uint64
		packetsAcked                 atomic.Uint64 // our packets the peer acknowledged
		delegationsAlone             atomic.Uint64 // DelegateRange frames read from delegation streams (readAlone)
	}
}

func newPath(sess *session, conn *quic.Conn, id, address string, primary, essential bool, ctrlStream *quic.Stream, ctrlReader *wire.Reader, peer peerParams) *path {
	p := &path{
		id:         id,
		sess:       sess,
		conn:       conn,
		address:    address,
		isPrimary:  primary,
		essential:  essential,
		peer:       peer,
		createdAt:  time.Now(),
		ctrlStream: ctrlStream,
		ctrlReader: ctrlReader,
	}
	p.ctx, p.cancel = context.WithCancel(sess.ctx)
	p.lastActive.Store(p.createdAt.UnixNano())
	p.ctrl = newControlWriter(p)
	p.roleControl = controlHandlerFor(sess.role, primary)
	p.pool.p = p
	p.progressPoke = make(chan struct{}, 1)
	return p
}

// smoothedRTT is the path's QUIC round trip (0 before any sample or without a connection).
func (p *path) smoothedRTT() time.Duration {
	if p == nil || p.conn == nil {
		return 0
	}
	return p.conn.ConnectionStats().SmoothedRTT
}

func (p *path) start() {
	p.sess.wg.Add(3)
	go p.readControl()
	go p.ctrl.run()
	go acceptEach(p, p.conn.AcceptUniStream, p.readData)
	if p.sess.role == RoleClient && p.isPrimary {
		// The primary's delegation streams (PROTOCOL.md §14).
		p.sess.wg.Add(1)
		go acceptEach(p, p.conn.AcceptStream, p.readAlone)
	}
	if !p.essential {
		p.sess.wg.Add(1)
		go p.watch()
	}
}

// watch is the watchdog of a client's secondary path, the only kind of path KWIK watches
// itself: every HeartbeatInterval it has a heartbeat sent, which the secondary's QUIC stack
// acknowledges, and it declares the path DEAD once QUIC has received nothing at all (no
// acknowledgement, no retransmission, no data) for PathTimeout. Liveness thus rests on QUIC's
// loss recovery, not on one control frame arriving: a lossy path keeps delivering some packets
// and lives. Every other path (the primary path, and each server's own) ends when its QUIC
// connection does: its MaxIdleTimeout, kept at bay by QUIC.KeepAlivePeriod if the application
// asks for keep-alives, as in quic-go. No heartbeat keeps such a path, or the session, busy.
func (p *path) watch() {
	defer p.sess.wg.Done()
	conf := p.sess.conf
	t := time.NewTicker(conf.HeartbeatInterval)
	defer t.Stop()
	// The delegations' progress deadlines (progress.go) are kept here too.
	var ps progressState
	check := time.NewTimer(time.Hour)
	check.Stop()
	defer check.Stop()
	received := p.conn.ConnectionStats().PacketsReceived
	progress := time.Now()
	for {
		tick := false
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
			tick = true
		case <-check.C:
		case <-p.progressPoke:
		}
		now := time.Now()
		if tick {
			if n := p.conn.ConnectionStats().PacketsReceived; n != received {
				received, progress = n, now
			} else if silent := now.Sub(progress); silent >= conf.PathTimeout {
				p.fail(&Error{Code: CodePathDead, Message: fmt.Sprintf("path %s: no QUIC packet received for %v", p.id, silent.Round(time.Millisecond))})
				return
			}
			p.ctrl.queueHeartbeat()
		}
		if wait := p.checkProgress(now, &ps); wait > 0 {
			check.Reset(wait)
		}
	}
}

// acceptEach accepts the peer's streams of one kind, and serves each on a goroutine of its own,
// until the path ends.
func acceptEach[S any](p *path, accept func(context.Context) (S, error), serve func(S)) {
	defer p.sess.wg.Done()
	for {
		st, err := accept(p.ctx)
		if err != nil {
			return
		}
		p.sess.wg.Add(1)
		go serve(st)
	}
}

// readAlone reads one of the primary's delegation streams to its end: DelegateRange frames
// only, each taken as if from the control stream, in whatever order the streams come.
func (p *path) readAlone(qs *quic.Stream) {
	defer p.sess.wg.Done()
	qs.Close() // this side sends nothing on it
	r := wire.NewReader(qs, p.sess.conf.MaxMessageSize)
	var f pb.ControlFrame
	for {
		body, err := r.Next()
		if err == io.EOF {
			return
		}
		if err == nil {
			err = wire.ParseControlFrame(body, &f)
		}
		if err == nil {
			m, ok := f.Payload.(*pb.ControlFrame_DelegateRange)
			if !ok {
				err = &Error{Code: CodeInvalidFrame, Message: fmt.Sprintf("%T on a delegation stream", f.Payload)}
			} else {
				p.stats.delegationsAlone.Add(1)
				err = p.sess.handleDelegateRange(m.DelegateRange)
			}
		}
		if err != nil {
			p.fail(err)
			return
		}
	}
}

// readData reads DataPackets from one of the peer's data streams and hands each frame to its
// logical stream. It never blocks on a slow reader: receive credit bounds what the peer sends.
func (p *path) readData(qs *quic.ReceiveStream) {
	defer p.sess.wg.Done()
	r := wire.NewReader(qs, p.sess.conf.MaxMessageSize)
	var (
		pkt, inner wire.DataPacket
		zbuf       []byte // decompressed frames
	)
	for {
		body, err := r.Next()
		if err != nil {
			if err != io.EOF {
				p.fail(err)
			}
			return
		}
		if err := wire.ParseDataPacket(body, &pkt); err != nil {
			p.fail(err)
			return
		}
		if !p.recordPacket(pkt.PacketID, len(body)) {
			p.fail(&Error{Code: CodeInvalidFrame, Message: "packet IDs too scattered"})
			return
		}
		frames := pkt.Frames
		if len(pkt.Compressed) > 0 {
			if len(pkt.Frames) > 0 || !p.sess.conf.Compression {
				p.fail(&Error{Code: CodeInvalidFrame, Message: "compressed data packet not negotiated, or mixed with plain frames"})
				return
			}
			if zbuf, err = decompress(pkt.Compressed, zbuf, p.sess.conf.MaxMessageSize, &inner); err != nil {
				p.fail(err)
				return
			}
			frames = inner.Frames
		}
		for i := range frames {
			f := &frames[i]
			var s *stream
			var err error
			switch {
			case p.isPrimary:
				s, err = p.sess.streams.get(f.StreamID)
			case p.sess.role == RoleClient:
				// A secondary fills delegated ranges of existing streams; it never opens one.
				s, err = p.sess.streams.lookup(f.StreamID)
			default:
				err = &Error{Code: CodeInvalidFrame, Message: "data sent to a secondary"}
			}
			if err == nil && s != nil {
				err = s.handleFrame(p, f.Offset, f.Data, f.Fin)
			}
			if err != nil {
				p.fail(err)
				return
			}
		}
		if cap(pkt.Frames) > 64 || cap(inner.Frames) > 64 {
			pkt.Frames, inner.Frames = nil, nil // do not keep a hostile packet's frame table
		}
	}
}

// fail handles an error on the path: the connection's end, silence past PathTimeout, or a
// protocol violation by the peer. An essential path takes the session with it; a client's
// secondary path dies alone and the primary is told.
func (p *path) fail(err error) {
	if p.ctx.Err() != nil {
		return // the path or the session is already closing
	}
	if cerr := connClosed(p.conn, err); cerr != nil {
		if !p.essential {
			p.sess.pathDied(p, cerr)
			return
		}
		p.sess.closeRemote(cerr)
		return
	}
	var tooLarge *wire.MessageTooLargeError
	var ke *Error
	switch {
	case errors.As(err, &tooLarge):
		err = &Error{Code: CodePacketTooLarge, Message: err.Error()}
	case errors.As(err, &ke):
	case errors.Is(err, wire.ErrMalformed), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		err = &Error{Code: CodeInvalidFrame, Message: err.Error()}
	default:
		err = &Error{Code: CodeInvalidFrame, Message: err.Error()}
	}
	if !p.essential {
		p.sess.pathDied(p, err)
		return
	}
	p.sess.closeLocal(err)
}

// connClosed returns what ended the connection, if err (from one of its streams) says that it
// ended: quic-go fails the streams with the connection's error before it cancels the
// connection's context, so the stream's error may be the first sign. An idle timeout, say, must
// end the session as one (a net.Error whose Timeout is true), never as a protocol violation.
// A SessionClose frame (an *ApplicationError from handleControl) counts as the peer's close.
func connClosed(conn *quic.Conn, err error) error {
	if conn.Context().Err() != nil {
		return closeError(context.Cause(conn.Context()))
	}
	var (
		appErr       *quic.ApplicationError
		transportErr *quic.TransportError
		idle         *quic.IdleTimeoutError
		handshake    *quic.HandshakeTimeoutError
		reset        *quic.StatelessResetError
		version      *quic.VersionNegotiationError
	)
	if errors.As(err, &appErr) || errors.As(err, &transportErr) || errors.As(err, &idle) ||
		errors.As(err, &handshake) || errors.As(err, &reset) || errors.As(err, &version) {
		return closeError(err)
	}
	return nil
}

// writeFailed is told of a failed write on one of the path's data streams. If the connection
// ended before its readers noticed (the peer answering this side's CloseWithError, say), the
// path fails now, so that the writer reports the session's error rather than the connection's.
func (p *path) writeFailed(err error) {
	if p.sess.ctx.Err() == nil && p.conn.Context().Err() != nil {
		p.fail(err)
	}
}

// maxAckRanges bounds the packet-ID ranges waiting to be acknowledged: honest senders leave
// about one gap per real stream between two acks.
const maxAckRanges = 4096

// recordPacket notes a received packet for the next AckFrame. It reports false if the peer
// scatters packet IDs beyond reason.
func (p *path) recordPacket(id uint64, size int) bool {
	p.stats.packetsReceived.Add(1)
	p.stats.bytesReceived.Add(uint64(size))
	p.lastActive.Store(time.Now().UnixNano())
	p.acks.mu.Lock()
	p.acks.received.Add(id, id+1)
	ok := p.acks.received.Len() <= maxAckRanges
	first := !p.acks.pending
	p.acks.pending = true
	p.acks.mu.Unlock()
	if first {
		notify(p.ctrl.wake)
	}
	return ok
}
