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
	"github.com/quic-go/quic-go"
)

// path is one QUIC connection of a session with its control stream and data plane.
//
// Goroutines, all counted in the session's WaitGroup and all ending when the connection
// closes (or, for the control writer and the watchdog, when the path's context ends):
//   - readControl: reads the control stream and dispatches frames;
//   - ctrl.run: writes queued control frames, coalescing credit updates and acks, and the
//     heartbeats the watchdog asks for;
//   - acceptData: accepts the peer's data streams and starts a readData for each;
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
	rec       *pathRecord // guarded by sess.paths.mu

	ctx    context.Context // ends when the path (or the session) ends
	cancel context.CancelFunc

	ctrlStream *quic.Stream
	ctrlReader *wire.Reader
	ctrl       *controlWriter
	pool       sendPool
	order      sendOrder // a secondary's delegated writers take turns on the path

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
	go p.acceptData()
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

func (p *path) acceptData() {
	defer p.sess.wg.Done()
	for {
		qs, err := p.conn.AcceptUniStream(p.ctx)
		if err != nil {
			return
		}
		p.sess.wg.Add(1)
		go p.readData(qs)
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

// sendPool is a path's set of real QUIC streams for sending data. A logical stream is
// assigned the least loaded real stream when it first sends; the pool opens another real
// stream when all carry StreamsPerRealStream logical streams (up to MaxRealStreams), and
// closes real streams that fall idle, keeping one for the next logical stream.
type sendPool struct {
	p *path

	mu      sync.Mutex
	streams []*realStream
}

type realStream struct {
	p     *path
	qs    *quic.SendStream
	users int // logical streams assigned; guarded by sendPool.mu

	// closeWhenIdle asks the writer holding mu to close qs when it is done: release never
	// waits for a write that QUIC may be holding up.
	closeWhenIdle atomic.Bool
	closed        atomic.Bool // qs closed; set under mu

	// afterIdleCheck, if set (tests only), runs in unlockAndDrain between closeIfIdle and
	// letting mu go.
	afterIdleCheck func()

	mu  sync.Mutex // serialises messages on qs
	buf []byte
	pkt wire.DataPacket
	z   compressor
	one [1]wire.DataFrame // writePacket's frame when it goes through writeFrames

	// Batching: a small frame that finds mu taken (a write under way) is copied into the
	// queue and its Write returns; whoever holds mu writes every queued frame, in as few
	// DataPackets as fit, before letting mu go. A frame that finds the stream idle is written
	// at once, after anything queued, so a lone request waits for nothing.
	batch struct {
		mu    sync.Mutex
		cond  sync.Cond // on mu: the queue was taken (room for more)
		queue batchQueue
		spare batchQueue
		err   error // the first write error; later frames fail with it
	}
}

func (sp *sendPool) assign() (*realStream, error) {
	conf := sp.p.sess.conf
	sp.mu.Lock()
	defer sp.mu.Unlock()
	var best *realStream
	for _, rs := range sp.streams {
		if best == nil || rs.users < best.users {
			best = rs
		}
	}
	if best == nil || (best.users >= conf.StreamsPerRealStream && len(sp.streams) < conf.MaxRealStreams) {
		qs, err := sp.p.conn.OpenUniStream()
		switch {
		case err == nil:
			rs := &realStream{p: sp.p, qs: qs, buf: make([]byte, 0, sp.p.peer.maxMessageSize+16)}
			rs.batch.cond.L = &rs.batch.mu
			sp.streams = append(sp.streams, rs)
			best = rs
		case best == nil:
			if sp.p.sess.ctx.Err() != nil {
				return nil, sp.p.sess.closeErr()
			}
			if sp.p.ctx.Err() != nil {
				return nil, &Error{Code: CodePathDead, Message: sp.p.id}
			}
			return nil, err
		}
	}
	best.users++
	return best, nil
}

// retain counts one more user of rs, which the pool assigned before; release gives it back.
func (sp *sendPool) retain(rs *realStream) {
	sp.mu.Lock()
	rs.users++
	sp.mu.Unlock()
}

func (sp *sendPool) release(rs *realStream) {
	sp.mu.Lock()
	rs.users--
	if rs.users > 0 {
		sp.mu.Unlock()
		return
	}
	idle := 0
	for _, o := range sp.streams {
		if o.users == 0 {
			idle++
		}
	}
	if idle <= 1 {
		sp.mu.Unlock()
		return
	}
	for i, o := range sp.streams {
		if o == rs {
			sp.streams = append(sp.streams[:i], sp.streams[i+1:]...)
			break
		}
	}
	sp.mu.Unlock()
	rs.closeWhenIdle.Store(true)
	if rs.mu.TryLock() {
		rs.unlockAndDrain() // closes qs if idle, and wakes any small frame's writer
	}
}

// closeIfIdle closes qs once the pool has let it go and no frame is queued (a frame queued
// since the last drain, a logical stream's fin say, is written first). rs.mu is held.
func (rs *realStream) closeIfIdle() {
	if !rs.closeWhenIdle.Load() || rs.closed.Load() {
		return
	}
	rs.batch.mu.Lock()
	queued := len(rs.batch.queue.frames) > 0
	rs.batch.mu.Unlock()
	if !queued {
		rs.closed.Store(true)
		rs.qs.Close()
	}
}

// size reports how many real streams the pool holds (for tests).
func (sp *sendPool) size() int {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return len(sp.streams)
}

// batchQueue is frames waiting to be written, their data copied into one buffer.
type batchQueue struct {
	frames []wire.DataFrame
	data   []byte
}

// maxBatch bounds the bytes queued on one real stream: past it, small writes wait for the
// queue to be written (each frame's own cost is counted on top of its data).
const maxBatch = 64 << 10

// writeFrame sends a frame. A large one goes in a DataPacket of its own, as a header and then
// the caller's bytes, which spares a copy (QUIC copies them anyway), and writeFrame returns
// once QUIC has it. So does a small one that finds the real stream idle; one that finds it busy
// is batched with the small frames of the other logical streams that share this real stream
// (see realStream.batch), unless the session disables batching: writeFrame then returns once
// the frame is queued, and a write error shows on a later call.
// The steady state allocates nothing.
func (rs *realStream) writeFrame(id, off uint64, b []byte, fin bool) error {
	// A large frame, or a small one that finds the real stream idle, is written at once,
	// without a copy into the queue: a lone request waits for nothing.
	direct := (len(b) >= directWriteMin && !fin) || rs.p.sess.conf.DisableBatching
	if direct {
		rs.mu.Lock()
	}
	if direct || rs.mu.TryLock() {
		err := rs.drainLocked() // what was queued before goes first
		if err == nil {
			err = rs.writePacket(id, off, b, fin)
		}
		rs.unlockAndDrain()
		return err
	}
	bt := &rs.batch
	bt.mu.Lock()
	for bt.err == nil && len(bt.queue.data)+len(bt.queue.frames)*32 >= maxBatch {
		bt.cond.Wait() // mu's holder is writing the queue
	}
	if err := bt.err; err != nil {
		bt.mu.Unlock()
		return err
	}
	q := &bt.queue
	if n := len(q.frames); n > 0 && fin && len(b) == 0 {
		// A fin right after its stream's last data: one frame says both.
		if last := &q.frames[n-1]; last.StreamID == id && !last.Fin && last.Offset+uint64(len(last.Data)) == off {
			last.Fin = true
			bt.mu.Unlock()
			rs.kick()
			return nil
		}
	}
	start := len(q.data)
	q.data = append(q.data, b...)
	q.frames = append(q.frames, wire.DataFrame{StreamID: id, Offset: off, Data: q.data[start:len(q.data):len(q.data)], Fin: fin})
	bt.mu.Unlock()
	rs.kick()
	return nil
}

// kick writes the queue unless mu's holder is at it: that one drains the queue again after
// letting mu go (unlockAndDrain), so no frame is left behind.
func (rs *realStream) kick() {
	if rs.mu.TryLock() {
		rs.unlockAndDrain()
	}
}

// drainLocked writes the queued frames until the queue is empty. rs.mu is held.
func (rs *realStream) drainLocked() error {
	bt := &rs.batch
	for {
		bt.mu.Lock()
		if len(bt.queue.frames) == 0 {
			err := bt.err
			bt.mu.Unlock()
			return err
		}
		// Double buffering: writers queue into the spare while this batch is written.
		q := bt.queue
		bt.queue, bt.spare = bt.spare, batchQueue{}
		bt.queue.frames, bt.queue.data = bt.queue.frames[:0], bt.queue.data[:0]
		bt.cond.Broadcast()
		bt.mu.Unlock()
		err := rs.writeFrames(q.frames)
		clear(q.frames)
		bt.mu.Lock()
		bt.spare = q
		if err != nil && bt.err == nil {
			bt.err = err
		}
		bt.mu.Unlock()
	}
}

// unlockAndDrain writes every queued frame and releases mu; a frame queued meanwhile by a
// writer that could not take mu is written too. rs.mu is held.
func (rs *realStream) unlockAndDrain() {
	bt := &rs.batch
	for {
		rs.drainLocked()
		rs.closeIfIdle()
		if rs.afterIdleCheck != nil {
			rs.afterIdleCheck()
		}
		rs.mu.Unlock()
		bt.mu.Lock()
		pending := len(bt.queue.frames) > 0
		bt.mu.Unlock()
		// release may have asked for the close after closeIfIdle looked, and failed to take mu.
		pending = pending || (rs.closeWhenIdle.Load() && !rs.closed.Load())
		if !pending || !rs.mu.TryLock() {
			return // nothing left, or the new holder drains it (and closes qs)
		}
	}
}

// writeFrames writes frames in as few DataPackets as the peer's message size allows. rs.mu is
// held.
func (rs *realStream) writeFrames(frames []wire.DataFrame) error {
	max := rs.p.peer.maxMessageSize
	for len(frames) > 0 {
		rs.pkt.PacketID = rs.p.nextPacket.Add(1) - 1
		size := wire.DataPacketSize(&wire.DataPacket{PacketID: rs.pkt.PacketID})
		n := 0
		for n < len(frames) {
			// The first frame always fits: a small frame is far below any message size.
			if s := wire.PacketFrameSize(&frames[n]); n == 0 || size+s <= max {
				size += s
				n++
				continue
			}
			break
		}
		rs.pkt.Frames = append(rs.pkt.Frames[:0], frames[:n]...)
		frames = frames[n:]
		if rs.compressing() {
			if z := rs.z.compress(rs.pkt.Frames); z != nil {
				clear(rs.pkt.Frames)
				rs.pkt.Frames, rs.pkt.Compressed = rs.pkt.Frames[:0], z
			}
		}
		rs.buf = wire.AppendDataPacketMessage(rs.buf[:0], &rs.pkt)
		clear(rs.pkt.Frames)
		rs.pkt.Compressed = nil
		if _, err := rs.qs.Write(rs.buf); err != nil {
			return err
		}
		rs.p.stats.packetsSent.Add(1)
		rs.p.stats.bytesSent.Add(uint64(len(rs.buf)))
	}
	return nil
}

// compressing says whether this real stream's packets may be compressed (Config.Compression,
// on both sides of the path).
func (rs *realStream) compressing() bool {
	return rs.p.sess.conf.Compression && rs.p.peer.zstd
}

// writePacket writes one DataPacket holding one frame. rs.mu is held.
func (rs *realStream) writePacket(id, off uint64, b []byte, fin bool) error {
	if rs.compressing() {
		rs.one[0] = wire.DataFrame{StreamID: id, Offset: off, Data: b, Fin: fin}
		err := rs.writeFrames(rs.one[:])
		rs.one[0].Data = nil // do not keep the caller's buffer
		return err
	}
	pn := rs.p.nextPacket.Add(1) - 1
	var err error
	size := 0
	if len(b) >= directWriteMin && !fin {
		rs.buf = wire.AppendDataPacketHeader(rs.buf[:0], pn, id, off, len(b))
		size = len(rs.buf) + len(b)
		if _, err = rs.qs.Write(rs.buf); err == nil {
			_, err = rs.qs.Write(b)
		}
	} else {
		rs.pkt.PacketID = pn
		rs.pkt.Frames = append(rs.pkt.Frames[:0], wire.DataFrame{StreamID: id, Offset: off, Data: b, Fin: fin})
		rs.buf = wire.AppendDataPacketMessage(rs.buf[:0], &rs.pkt)
		rs.pkt.Frames[0].Data = nil // do not keep the caller's buffer
		size = len(rs.buf)
		_, err = rs.qs.Write(rs.buf)
	}
	if err == nil {
		rs.p.stats.packetsSent.Add(1)
		rs.p.stats.bytesSent.Add(uint64(size))
	}
	return err
}

// directWriteMin is the frame size from which writeFrame writes the caller's bytes directly.
const directWriteMin = 8 << 10
