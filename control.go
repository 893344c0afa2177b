package kwik

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/kwik-go/kwik/internal/wire"
	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// ackDelay is how long a receiver gathers packet IDs before acknowledging them: one
// AckFrame per path per ackDelay at most, whatever the packet rate.
const ackDelay = 10 * time.Millisecond

// controlWriter is the only writer of a path's control stream. Other goroutines queue frames
// and never block on the network: stream credit (MaxStreamData) and MaxStreams are coalesced
// to their latest value, acks are gathered for ackDelay, so the queue stays bounded by the
// number of streams.
type controlWriter struct {
	p    *path
	wake chan struct{} // cap 1

	mu            sync.Mutex
	frames        []*pb.ControlFrame
	alone         []*pb.ControlFrame // each on a stream of its own (queueAlone)
	written       []chan struct{}    // closed once the frames queued before them are written
	creates       []*stream          // opened streams to announce, unless their data went first
	maxStreamData map[uint64]uint64
	maxStreams    [2]uint64 // by direction
	rawBytes      int       // relayed data queued, bounded by Config.MaxPendingRawData
	heartbeat     bool      // the watchdog asks for a heartbeat
	overflow      bool
	closed        bool

	// Owned by the run goroutine.
	buf         []byte
	nextFrameID uint64
}

func newControlWriter(p *path) *controlWriter {
	return &controlWriter{p: p, wake: make(chan struct{}, 1), maxStreamData: make(map[uint64]uint64)}
}

// maxQueuedControlFrames bounds the frames waiting for the control stream. Only a peer that
// stops reading its control stream while making this side answer (resets, raw relays...)
// fills it; that path then fails instead of holding memory.
const maxQueuedControlFrames = 16384

func (w *controlWriter) queue(f *pb.ControlFrame) { w.push(f, false) }

// queueAlone queues f to go on a QUIC stream of its own, which the writer opens, writes and
// closes: the primary's delegations (PROTOCOL.md §14), which a packet of the control stream
// lost behind the primary's own bytes would otherwise hold up. When the peer allows no more
// streams for now, f goes on the control stream.
func (w *controlWriter) queueAlone(f *pb.ControlFrame) { w.push(f, true) }

// push queues f for the control stream, or alone on a stream of its own.
func (w *controlWriter) push(f *pb.ControlFrame, alone bool) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	switch {
	case len(w.frames)+len(w.alone) >= maxQueuedControlFrames:
		if !w.overflow {
			w.overflow = true
			// The writer may be stuck in a Write that a peer who reads nothing never lets
			// through: make it return, so that it fails the path now rather than never.
			_ = w.p.ctrlStream.SetWriteDeadline(time.Now())
		}
	case alone:
		w.alone = append(w.alone, f)
	default:
		w.frames = append(w.frames, f)
	}
	w.mu.Unlock()
	notify(w.wake)
}

// flush queues f and returns a channel closed once it (and everything queued before it) is
// written to the control stream, or the writer has stopped.
func (w *controlWriter) flush(f *pb.ControlFrame) <-chan struct{} {
	done := make(chan struct{})
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		close(done)
		return done
	}
	w.frames = append(w.frames, f)
	w.written = append(w.written, done)
	w.mu.Unlock()
	notify(w.wake)
	return done
}

// queueRaw queues relayed data unless more than limit bytes of it are already waiting.
func (w *controlWriter) queueRaw(m *pb.RawPacketTransmission, limit int) bool {
	w.mu.Lock()
	cost := len(m.Data) + rawEntryCost
	if w.closed || w.rawBytes+cost > limit || len(w.frames) >= maxQueuedControlFrames {
		w.mu.Unlock()
		return false
	}
	w.rawBytes += cost
	w.frames = append(w.frames, &pb.ControlFrame{Payload: &pb.ControlFrame_RawPacketTransmission{RawPacketTransmission: m}})
	w.mu.Unlock()
	notify(w.wake)
	return true
}

// queueCreate announces a stream this side opened. The announcement is dropped if the
// stream's first data frame is sent before the writer gets to it: the frame announces it.
func (w *controlWriter) queueCreate(s *stream) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.creates = append(w.creates, s)
	w.mu.Unlock()
	notify(w.wake)
}

func (w *controlWriter) queueMaxStreamData(id, max uint64) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	if max > w.maxStreamData[id] {
		w.maxStreamData[id] = max
	}
	w.mu.Unlock()
	notify(w.wake)
}

// queueHeartbeat asks for a heartbeat (see path.watch).
func (w *controlWriter) queueHeartbeat() {
	w.mu.Lock()
	w.heartbeat = true
	w.mu.Unlock()
	notify(w.wake)
}

func (w *controlWriter) queueMaxStreams(max uint64, dir int) {
	w.mu.Lock()
	if max > w.maxStreams[dir] {
		w.maxStreams[dir] = max
	}
	w.mu.Unlock()
	notify(w.wake)
}

func (w *controlWriter) run() {
	defer w.p.sess.wg.Done()
	defer w.stop() // however the writer ends, flush's callers hear of it
	var (
		frames     []*pb.ControlFrame
		alone      []*pb.ControlFrame
		creates    []*stream
		credit     = make(map[uint64]uint64)
		maxStreams [2]uint64
		ackTimer   = time.NewTimer(time.Hour)
		ackArmed   bool
		// Reused for the coalesced frames, which are the steady-state traffic.
		msd    pb.MaxStreamData
		msdF   = &pb.ControlFrame{Payload: &pb.ControlFrame_MaxStreamData{MaxStreamData: &msd}}
		scn    pb.StreamCreateNotification
		scnF   = &pb.ControlFrame{Payload: &pb.ControlFrame_StreamCreateNotification{StreamCreateNotification: &scn}}
		ms     pb.MaxStreams
		msF    = &pb.ControlFrame{Payload: &pb.ControlFrame_MaxStreams{MaxStreams: &ms}}
		ack    pb.AckFrame
		ackF   = &pb.ControlFrame{Payload: &pb.ControlFrame_Ack{Ack: &ack}}
		ranges []*pb.AckRange
	)
	ackTimer.Stop()
	defer ackTimer.Stop()
	var (
		hb  pb.Heartbeat
		hbF = &pb.ControlFrame{Payload: &pb.ControlFrame_Heartbeat{Heartbeat: &hb}}
	)
	for {
		sendAcks := false
		select {
		case <-w.wake:
		case <-ackTimer.C:
			ackArmed = false
			sendAcks = true
		case <-w.p.ctx.Done():
			return
		}
		w.mu.Lock()
		sendHeartbeat := w.heartbeat
		w.heartbeat = false
		frames, w.frames = w.frames, frames[:0]
		alone, w.alone = w.alone, alone[:0]
		written := w.written
		w.written = nil
		w.rawBytes = 0 // taken for writing: the room is free again
		overflow := w.overflow
		creates, w.creates = w.creates, creates[:0]
		credit, w.maxStreamData = w.maxStreamData, credit
		maxStreams, w.maxStreams = w.maxStreams, [2]uint64{}
		w.mu.Unlock()

		if overflow {
			for _, c := range written {
				close(c)
			}
			w.p.fail(errControlOverflow())
			return
		}
		w.buf = w.buf[:0]
		var err error
		for i, f := range frames {
			if err == nil {
				w.buf, err = w.append(f)
			}
			frames[i] = nil
		}
		for i, f := range alone {
			if err == nil {
				err = w.writeAlone(f)
			}
			alone[i] = nil
		}
		for i, st := range creates {
			if !st.announced.Swap(true) && err == nil {
				scn.LogicalStreamId, scn.PathId = st.id, w.p.id
				w.buf, err = w.append(scnF)
			}
			creates[i] = nil
		}
		for id, max := range credit {
			msd.LogicalStreamId, msd.Maximum = id, max
			if err == nil {
				w.buf, err = w.append(msdF)
			}
		}
		clear(credit)
		if sendHeartbeat && err == nil {
			hb.Sequence++
			w.buf, err = w.append(hbF)
		}
		for dir, max := range maxStreams {
			if max > 0 && err == nil {
				ms.Maximum, ms.Unidirectional = max, dir == dirUni
				w.buf, err = w.append(msF)
			}
		}
		w.p.acks.mu.Lock()
		pending := w.p.acks.pending
		if pending && sendAcks {
			ranges = ranges[:0]
			for _, r := range w.p.acks.received.Ranges() {
				ranges = append(ranges, &pb.AckRange{First: r.Start, Last: r.End - 1})
			}
			if max, ok := w.p.acks.received.Max(); ok {
				w.p.acks.received.RemoveBelow(max)
			}
			w.p.acks.pending = false
			pending = false
		}
		w.p.acks.mu.Unlock()
		if sendAcks && len(ranges) > 0 && err == nil {
			ack.PathId = w.p.id
			ack.Ranges = ranges
			ack.AckId++
			ack.Timestamp = uint64(time.Now().UnixNano())
			w.buf, err = w.append(ackF)
			ranges = ranges[:0]
		}
		if pending && !ackArmed {
			ackTimer.Reset(ackDelay)
			ackArmed = true
		}
		if err == nil && len(w.buf) > 0 {
			_, err = w.p.ctrlStream.Write(w.buf)
		}
		for _, c := range written {
			close(c)
		}
		if err != nil {
			w.mu.Lock()
			if w.overflow {
				err = errControlOverflow() // what the write deadline above cut short
			}
			w.mu.Unlock()
			w.p.fail(err)
			return
		}
	}
}

// writeAlone writes f on a new QUIC stream, or, if the peer allows none now, appends it to the
// control stream's batch.
func (w *controlWriter) writeAlone(f *pb.ControlFrame) error {
	st, err := w.p.conn.OpenStream()
	if err != nil {
		if w.p.conn.Context().Err() != nil {
			return err
		}
		w.buf, err = w.append(f) // at the peer's stream limit: on the control stream
		return err
	}
	st.CancelRead(0) // the client sends nothing on it
	b, err := wire.AppendControlFrame(nil, f)
	if err == nil {
		_, err = st.Write(b)
	}
	// Close's error is ignored, as the offer's (offerSession): once written, the frame is
	// QUIC's to deliver.
	_ = st.Close()
	return err
}

// stop ends the writer: nothing more is queued, and every flush waiting is released.
func (w *controlWriter) stop() {
	w.mu.Lock()
	w.closed = true
	w.frames = nil
	w.alone = nil
	written := w.written
	w.written = nil
	w.mu.Unlock()
	for _, c := range written {
		close(c)
	}
}

func errControlOverflow() error {
	return &Error{Code: CodeInternal, Message: "control queue overflow: the peer does not read its control stream"}
}

func (w *controlWriter) append(f *pb.ControlFrame) ([]byte, error) {
	f.FrameId = w.nextFrameID
	w.nextFrameID++
	return wire.AppendControlFrame(w.buf, f)
}

// readControl reads the path's control stream until the connection ends. It sets no deadline:
// a path's liveness is QUIC's business (its idle timeout), and on a client's secondary path
// the watchdog's (path.watch).
func (p *path) readControl() {
	defer p.sess.wg.Done()
	if p.answerDue {
		if err := p.awaitAnswer(); err != nil {
			p.fail(err)
			return
		}
	}
	var f pb.ControlFrame
	for {
		body, err := p.ctrlReader.Next()
		if err != nil {
			p.fail(err)
			return
		}
		if err := wire.ParseControlFrame(body, &f); err != nil {
			p.fail(err)
			return
		}
		p.lastActive.Store(time.Now().UnixNano())
		if err := p.handleControl(&f); err != nil {
			p.fail(err)
			return
		}
	}
}

// awaitAnswer reads the server's answer to the authentication request of a session the client
// took from the server's offer (clientAuthenticate): the same session, or a refusal the
// server decided when the request came (an unsupported version, a full accept queue), which
// ends the session with the server's error.
func (p *path) awaitAnswer() error {
	// Within the handshake timeout, as Dial waited for it before the offer: a server that
	// offers and never answers holds the control stream, heartbeats and all.
	_ = p.ctrlStream.SetReadDeadline(time.Now().Add(p.sess.conf.HandshakeTimeout))
	resp, err := readAnswer(p.ctrlReader)
	_ = p.ctrlStream.SetReadDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) && p.ctx.Err() == nil {
		return &Error{Code: CodeAuthFailed, Message: "the server offered a session and did not answer its request within the handshake timeout"}
	}
	if err != nil {
		return err
	}
	sessionID, pathID, _, err := checkAnswer(resp)
	if err == nil && (sessionID != p.sess.id || pathID != p.id) {
		err = &Error{Code: CodeInvalidFrame, Message: "the server's answer names another session than its offer"}
	}
	return err
}

// handleControl dispatches one control frame. The frames every path takes (heartbeats, acks,
// raw data, the peer's close) are handled here; the rest go to the handler of the path's role
// and kind, chosen once when the path was made (controlHandlerFor): the client's primary
// path (control_client.go), a client's secondary path (control_client.go), the primary's path
// (control_primary.go) or a secondary's (control_secondary.go). A frame that handler does not
// take is out of place for the role, and is rejected here, with KWIK_INVALID_FRAME: a
// secondary, for instance, may not touch the client's streams.
func (p *path) handleControl(f *pb.ControlFrame) error {
	switch m := f.Payload.(type) {
	case *pb.ControlFrame_Heartbeat:
		return nil // readControl already noted that the path is alive
	case *pb.ControlFrame_Ack:
		return p.handleAck(m.Ack)
	case *pb.ControlFrame_SessionClose:
		// The peer closes on purpose, after everything it queued before: as if its connection
		// closed with that code (a secondary's path ends; any other path ends the session).
		return &quic.ApplicationError{Remote: true, ErrorCode: ApplicationErrorCode(m.SessionClose.ErrorCode), ErrorMessage: m.SessionClose.Reason}
	}
	if handled, err := p.roleControl(p, f); handled {
		return err
	}
	return &Error{Code: CodeInvalidFrame, Message: fmt.Sprintf("unexpected control frame %T on a %v path", f.Payload, p.sess.role)}
}

// controlHandler handles the control frames of one role and path kind. It reports
// handled=false, having done nothing, for a frame out of place there.
type controlHandler func(p *path, f *pb.ControlFrame) (handled bool, err error)

// controlHandlerFor returns the handler of the control frames a path of a session of role
// takes; primaryPath says whether the path is the client's path to the primary (or the
// primary's own, its only one).
func controlHandlerFor(role Role, primaryPath bool) controlHandler {
	switch {
	case role == RoleClient && primaryPath:
		return (*path).clientPrimaryControl
	case role == RoleClient:
		return (*path).clientSecondaryControl
	case role == RolePrimary:
		return (*path).primaryControl
	default:
		return (*path).secondaryControl
	}
}

// streamControl handles the frames of the logical streams, which live between the client and
// the primary only: the client's primary path and the primary's path take them.
func (p *path) streamControl(f *pb.ControlFrame) (handled bool, err error) {
	streams := p.sess.streams
	switch m := f.Payload.(type) {
	case *pb.ControlFrame_StreamCreateNotification:
		_, err := streams.get(m.StreamCreateNotification.LogicalStreamId)
		return true, err
	case *pb.ControlFrame_MaxStreamData:
		s, err := streams.get(m.MaxStreamData.LogicalStreamId)
		if s != nil {
			s.handleMaxStreamData(m.MaxStreamData.Maximum)
		}
		return true, err
	case *pb.ControlFrame_MaxStreams:
		dir := dirBidi
		if m.MaxStreams.Unidirectional {
			dir = dirUni
		}
		streams.handleMaxStreams(m.MaxStreams.Maximum, dir)
		return true, nil
	case *pb.ControlFrame_StreamReset:
		r := m.StreamReset
		s, err := streams.get(r.LogicalStreamId)
		if s != nil {
			err = s.handleReset(StreamErrorCode(r.ErrorCode), r.FinalSize)
		}
		return true, err
	case *pb.ControlFrame_StopSending:
		s, err := streams.get(m.StopSending.LogicalStreamId)
		if s != nil {
			s.cancelWrite(StreamErrorCode(m.StopSending.ErrorCode), true)
		}
		return true, err
	}
	return false, nil
}

// serverRawControl handles the raw data frames a server (primary or secondary) takes from the
// client: raw data delivered to it, and the outcome of what it sent.
func (p *path) serverRawControl(f *pb.ControlFrame) (handled bool, err error) {
	switch m := f.Payload.(type) {
	case *pb.ControlFrame_RawPacketTransmission:
		p.sess.receiveRaw(m.RawPacketTransmission)
		return true, nil
	case *pb.ControlFrame_RawPacketResult:
		return true, p.sess.handleRawResult(m.RawPacketResult)
	}
	return false, nil
}

func (p *path) handleAck(a *pb.AckFrame) error {
	sent := p.nextPacket.Load()
	var n uint64
	for _, r := range a.Ranges {
		if r.Last < r.First || r.Last >= sent {
			return &Error{Code: CodeInvalidFrame, Message: "ack for a packet never sent"}
		}
		n += r.Last - r.First + 1
	}
	p.stats.packetsAcked.Add(n)
	return nil
}
