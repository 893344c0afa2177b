package kwik

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwik-go/kwik/internal/data"
	"github.com/kwik-go/kwik/internal/flowcontrol"
	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// stream is a logical KWIK stream: a receive half fed by the data readers of every path
// (reassembled by offset) and a send half that writes DataPackets on a real QUIC stream of
// its path. Each half has its own mutex beside exactly the fields it guards; neither lock is
// held while writing to QUIC or waiting. Concurrent Reads (or concurrent Writes) on one
// stream are not supported, as in quic-go; Read, Write and the Cancel/Close calls may run
// concurrently with each other.
type stream struct {
	id   uint64
	sess *session
	path *path

	ctx       context.Context // canceled when the send side ends
	cancelCtx context.CancelCauseFunc

	// A unidirectional stream has one half: sendOnly if this side opened it, recvOnly if the
	// peer did.
	sendOnly, recvOnly bool

	recv struct {
		mu        sync.Mutex
		buf       data.RecvBuffer
		fc        flowcontrol.Receiver[*path] // credit granted, the window and its tuning
		loan      loan                        // the stream's side of the session's budget
		finalSize uint64
		finKnown  bool
		err       error     // reset by the peer, or canceled here
		state     recvState // open, ended (no more data is taken), seen by the application
		deadline  time.Time
		delegs    []*delegationRecord // client: active delegations of this stream
		stopped   []*delegationRecord // client: delegations failed by their deadline, whose late bytes are dropped
		fed       []*path             // client: the paths that had a delegation of this stream
		hash      hash.Hash           // client: SHA-256 of delegated blocks (digest.go), made at first use
	}
	recvSignal chan struct{} // cap 1: data, fin, reset or deadline change

	send struct {
		sendCredit             // credit, error, deadline and the wake-up of waiting writers; mu guards all below
		offset     uint64      // next byte to send
		state      sendState   // open, closing (Close was called), ended (fin or reset sent: the real stream is given back)
		rs         *realStream // assigned real stream, nil until the first frame

		// Primary: delegations not yet resolved, and the undelivered suffixes of failed ones
		// (what WriteAt may fill). The stream completes only once nothing is owed, so that
		// the client's credit keeps reaching it.
		pending    int
		owed       data.RangeSet  // every byte WriteAt may write: failed suffixes and reserved ranges
		refill     data.RangeSet  // the part of owed nobody has written or is writing yet
		filling    uint64         // bytes of owed that WriteAts are writing now
		failed     []*Delegation  // failed delegations whose suffix Wait has not reported: a Write blocked behind one returns its error
		completion sendCompletion // whether the application has seen the end, and the half completed
	}

	writeCall *sendCall // Write's part of the send loop, made with the stream (no allocation per Write)

	// announced is set once the peer has been told of the stream, by its first data frame or
	// by a STREAM_CREATE_NOTIFICATION, whichever goes first.
	announced atomic.Bool

	// Guarded by the session's streamsMap mutex.
	recvFinished, sendFinished bool
}

// newStream returns stream id, opened by this side if local. A unidirectional stream is born
// with the half it lacks already ended (and, for its completion, finished: the caller holds
// the streamsMap's mutex).
func newStream(id uint64, sess *session, p *path, local bool) *stream {
	s := &stream{
		id:         id,
		sess:       sess,
		path:       p,
		recvSignal: make(chan struct{}, 1),
	}
	s.send.wake = make(chan struct{})
	s.ctx, s.cancelCtx = context.WithCancelCause(sess.ctx)
	s.recv.fc = flowcontrol.NewReceiver(sess.conf.initialStreamWindow(), uint64(sess.conf.StreamReceiveWindow), p, creditLoop(p), time.Now())
	s.recv.loan = loan{c: &sess.credit, s: s}
	s.writeCall = s.newWriteCall()
	s.send.maxOffset = p.peer.streamWindow
	if streamDir(id) == dirUni {
		if local {
			s.sendOnly = true
			s.recv.err = fmt.Errorf("kwik: stream %d is send-only", id)
			s.recv.state, s.recvFinished = recvSeen, true
		} else {
			s.recvOnly = true
			s.send.err = fmt.Errorf("kwik: stream %d is receive-only", id)
			s.send.state, s.send.completion, s.sendFinished = sendEnded, sendComplete, true
			s.cancelCtx(s.send.err) // a receive stream has no context of its own
		}
	}
	return s
}

// creditLoop is the round trip a stream's credit takes to bring bytes from a path, for a
// stream whose own path is home: the path's RTT for home; for a secondary, the credit reaches
// the primary over home, whose delegation comes back over home before the client passes it to
// the secondary, whose bytes come back over its path: both RTTs.
func creditLoop(home *path) func(*path) time.Duration {
	return func(q *path) time.Duration {
		if q == home {
			return q.smoothedRTT()
		}
		return q.smoothedRTT() + home.smoothedRTT()
	}
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (s *stream) StreamID() uint64         { return s.id }
func (s *stream) PathID() string           { return s.path.id }
func (s *stream) Context() context.Context { return s.ctx }
func (s *stream) streamError(code StreamErrorCode, remote bool) error {
	return &StreamError{StreamID: quic.StreamID(s.id), ErrorCode: code, Remote: remote}
}

// Read reads the stream's bytes in order, from whichever path brought them.
func (s *stream) Read(p []byte) (int, error) {
	for {
		s.recv.mu.Lock()
		if s.recv.err != nil {
			err := s.recv.err
			s.recv.mu.Unlock()
			s.completeRecv()
			return 0, err
		}
		if s.recv.finKnown && s.recv.buf.ReadOffset() == s.recv.finalSize {
			s.recv.mu.Unlock()
			s.finishRecv()
			return 0, io.EOF
		}
		if err := s.sess.ctx.Err(); err != nil {
			s.recv.mu.Unlock()
			return 0, s.sess.closeErr()
		}
		if len(p) == 0 {
			s.recv.mu.Unlock()
			return 0, nil
		}
		q := p
		if held, _, ok := s.heldFromLocked(); ok {
			// Not past a delegated block whose digest has not been checked yet.
			q = q[:min(uint64(len(q)), held-min(held, s.recv.buf.ReadOffset()))]
		}
		blocks := s.recv.buf.BufferedBlocks()
		n := s.recv.buf.Read(q)
		s.sess.credit.held(s.recv.buf.BufferedBlocks() - blocks)
		if n > 0 {
			off := s.recv.buf.ReadOffset()
			eof := s.recv.finKnown && off == s.recv.finalSize
			s.recv.fc.Read(off, time.Now())
			grant, wake := s.grantLocked()
			s.recv.mu.Unlock()
			if grant > 0 {
				s.path.ctrl.queueMaxStreamData(s.id, grant)
			}
			if wake {
				s.sess.serveStalled()
			}
			if eof {
				s.finishRecv()
				return n, io.EOF
			}
			return n, nil
		}
		// Nothing to read: the window's tuning wants to know whether a gap holds the reader.
		s.recv.fc.Blocked(time.Now(), uint64(s.recv.buf.BufferedBlocks())*data.BlockSize)
		deadline := s.recv.deadline
		s.recv.mu.Unlock()
		if err := s.sess.waitSignal(s.recvSignal, deadline); err != nil {
			return 0, err
		}
	}
}

// handleFrame stores a data frame's bytes that arrived on path p. It runs on a path's data
// reader goroutine and never blocks: credit bounds what may arrive. On the client, bytes from
// a secondary are taken only inside a range delegated to that path.
func (s *stream) handleFrame(p *path, off uint64, b []byte, fin bool) error {
	end := off + uint64(len(b))
	if end < off {
		return &Error{Code: CodeInvalidFrame, Message: "offset overflow"}
	}
	if s.sendOnly {
		return &Error{Code: CodeInvalidFrame, Message: "data on a stream the peer may not send on"}
	}
	s.recv.mu.Lock()
	if s.recv.state.ended() {
		s.recv.mu.Unlock()
		return nil // canceled or reset: late frames are dropped
	}
	var d *delegationRecord
	if p != s.path {
		if d = s.delegationFor(p, off, end); d == nil || fin {
			var err error
			if late := s.stoppedFor(p, off, end); late != nil && !fin {
				// Sent before the secondary heard that its range was failed: dropped.
				p.stalledUntil.Store(0) // it is not hung after all
				err = s.sess.lateBytesLocked(late, off, end)
			} else {
				err = &Error{Code: CodeOffsetMismatch, Message: "data from a secondary outside the ranges delegated to it"}
			}
			s.recv.mu.Unlock()
			return err
		}
	}
	err := s.storeFrame(p, off, end, b, fin)
	if d != nil {
		var ke *Error
		if errors.As(err, &ke) {
			// A secondary's frames may only cost that path, never the session.
			err = &Error{Code: CodeOffsetMismatch, Message: ke.Message}
		}
	}
	if err == nil && d != nil {
		now := time.Now()
		d.since = now
		p.lastDelegated.Store(now.UnixNano())
		p.stalledUntil.Store(0)
		d.got.Add(off, end)
		if d.got.Len() > maxRangesPerDelegation {
			err = &Error{Code: CodeOffsetMismatch, Message: "secondary's range too fragmented"}
		}
	}
	// Digest-carrying ranges these bytes complete blocks of (whoever sent them) are checked
	// before anything decides their delegation: bytes that do not match are never complete.
	var bad []*delegationRecord // rarely any
	var badAt []uint64
	if err == nil {
		bad = s.verifyLocked(nil, off, end)
		for _, b := range bad {
			badAt = append(badAt, s.sess.digestMismatchLocked(b))
		}
	}
	state, missing := delegationActive, uint64(0)
	if err == nil && d != nil && d.state == delegationActive {
		if state = d.outcome(); state != delegationActive {
			missing = d.settleLocked()
		}
	}
	s.recv.mu.Unlock()
	for i, b := range bad {
		s.sess.digestMismatch(b, badAt[i])
	}
	if state != delegationActive {
		s.sess.reportOutcome(d, state, missing, CodeOffsetMismatch, "the secondary closed short")
	}
	return err
}

// storeFrame checks a frame against credit and final size and buffers it. s.recv.mu is held.
func (s *stream) storeFrame(p *path, off, end uint64, b []byte, fin bool) error {
	// An empty fin stores nothing: its final size may lie beyond the credit, past ranges
	// delegated to secondaries that the reader has not reached yet.
	if end > s.recv.fc.Limit() && len(b) > 0 {
		return &Error{Code: CodeFlowControl, Message: "data beyond stream credit"}
	}
	if fin {
		if s.recv.finKnown && s.recv.finalSize != end {
			return &Error{Code: CodeInvalidFrame, Message: "final size changed"}
		}
		if end < s.recv.buf.HighestReceived() || end < s.recv.buf.ReadOffset() {
			return &Error{Code: CodeInvalidFrame, Message: "final size below received data"}
		}
		s.recv.finKnown, s.recv.finalSize = true, end
	} else if s.recv.finKnown && end > s.recv.finalSize {
		return &Error{Code: CodeInvalidFrame, Message: "data beyond final size"}
	}
	blocks := s.recv.buf.BufferedBlocks()
	if n := s.recv.buf.Write(off, b); n > 0 {
		s.recv.fc.Received(p, uint64(n))
	}
	s.recv.fc.Arrived(end)
	s.sess.credit.held(s.recv.buf.BufferedBlocks() - blocks)
	if s.recv.buf.Received().Len() > maxRangesPerStream {
		return &Error{Code: CodeInvalidFrame, Message: "stream data too fragmented"}
	}
	notify(s.recvSignal)
	return nil
}

// releaseRecvLocked returns the receive buffer's memory. s.recv.mu is held.
func (s *stream) releaseRecvLocked() {
	s.sess.credit.held(-s.recv.buf.BufferedBlocks())
	s.recv.buf.Release()
}

// maxRangesPerStream bounds the gaps a stream's receive buffer may hold: honest senders leave
// a few (one per source in flight); a peer spraying tiny frames would otherwise cost
// quadratic time and memory well beyond the credit.
const maxRangesPerStream = 1024

// maxRangesPerDelegation bounds the gaps one secondary may leave in one delegated range (it
// writes in order; a few gaps come from its real streams interleaving).
const maxRangesPerDelegation = 64

// handleReset is the peer's CancelWrite.
func (s *stream) handleReset(code StreamErrorCode, finalSize uint64) error {
	s.recv.mu.Lock()
	if s.recv.state.ended() {
		s.recv.mu.Unlock()
		return nil
	}
	// (No credit check: a reset carries no data, and delegated ranges may lie beyond the credit.)
	if (s.recv.finKnown && s.recv.finalSize != finalSize) || finalSize < s.recv.buf.HighestReceived() {
		s.recv.mu.Unlock()
		return &Error{Code: CodeInvalidFrame, Message: "reset with an impossible final size"}
	}
	// The stream completes when the application sees the error (Read) or cancels reading:
	// until then it counts against the peer's stream limit, as in QUIC.
	s.recv.err = s.streamError(code, true)
	s.recv.state.end()
	wake := s.endRecvLocked()
	s.releaseRecvLocked()
	delegs := s.recv.delegs
	s.recv.mu.Unlock()
	notify(s.recvSignal)
	if wake {
		s.sess.serveStalled()
	}
	for _, d := range delegs {
		s.sess.failDelegation(d, CodeInternal, "the primary reset the stream")
	}
	s.sess.stopDelegations(delegs, s.id, code)
	s.sess.dropHeld(s.id, "the primary reset the stream")
	return nil
}

// CancelRead abandons the read side and tells the peer to stop sending.
func (s *stream) CancelRead(code StreamErrorCode) {
	s.recv.mu.Lock()
	if s.recv.state.ended() {
		s.recv.mu.Unlock()
		s.completeRecv()
		return
	}
	s.recv.err = s.streamError(code, false)
	s.recv.state.end()
	wake := s.endRecvLocked()
	s.releaseRecvLocked()
	delegs := s.recv.delegs
	s.recv.mu.Unlock()
	notify(s.recvSignal)
	if wake {
		s.sess.serveStalled()
	}
	s.path.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_StopSending{StopSending: &pb.StopSending{LogicalStreamId: s.id, ErrorCode: uint64(code)}}})
	for _, d := range delegs {
		s.sess.failDelegation(d, CodeInternal, "the client canceled reading")
	}
	s.sess.stopDelegations(delegs, s.id, code)
	s.sess.dropHeld(s.id, "the client canceled reading")
	s.completeRecv()
}

// finishRecv ends the receive half once Read has reached the final size. A delegation still
// under way then had its bytes from the primary (Fanout sends a slow secondary's last pieces
// again): it is complete, and its secondary is told to stop.
func (s *stream) finishRecv() {
	s.recv.mu.Lock()
	wake := false
	if s.recv.state.end() {
		wake = s.endRecvLocked()
	}
	s.releaseRecvLocked()
	delegs := s.recv.delegs
	for _, d := range delegs {
		d.state = delegationComplete
		d.detach()
	}
	s.recv.mu.Unlock()
	if wake {
		s.sess.serveStalled()
	}
	for _, d := range delegs {
		s.sess.reportOutcome(d, delegationComplete, d.end, 0, "")
	}
	s.sess.stopDelegations(delegs, s.id, 0)
	s.sess.settleHeld(s.id)
	s.completeRecv()
}

// completeRecv reports, once, that the application has seen the end of the receive half.
func (s *stream) completeRecv() {
	s.recv.mu.Lock()
	first := s.recv.state.see()
	s.recv.mu.Unlock()
	if first {
		s.sess.streams.finished(s, true, false)
	}
}

// Write sends p at the stream's end, in frames no larger than the peer's message size, within
// the peer's credit. Blocked on credit behind the undelivered suffix of a failed delegation
// that nobody waits for (see Delegation.Wait), it returns an error wrapping its
// *DelegationError: the reader cannot pass that gap, so credit would never come.
func (s *stream) Write(p []byte) (int, error) {
	return s.send.send(s.sess, s.id, s.path.peer.maxFrameData, p, s.writeCall)
}

// newWriteCall is Write's part of the send loop. Its functions hold no state of their own.
func (s *stream) newWriteCall() *sendCall {
	return &sendCall{
		next: func() (uint64, uint64, error) {
			if s.send.state.closed() {
				return 0, 0, ErrWriteAfterClose
			}
			return s.send.offset, math.MaxUint64, nil
		},
		blocked: s.failedBehindLocked,
		take: func(off, n uint64) (*realStream, bool, error) {
			rs, err := s.realStreamLocked()
			if err != nil {
				return nil, false, err
			}
			s.send.offset += n
			return rs, true, nil
		},
		failed: s.writeError,
		ended:  s.completeSend,
	}
}

// realStreamLocked returns the real stream this logical stream sends on, assigning one from
// the path's pool on first use. s.send.mu is held.
func (s *stream) realStreamLocked() (*realStream, error) {
	if s.send.rs == nil {
		s.announced.Store(true) // the first frame names the stream
		rs, err := s.path.pool.assign()
		if err != nil {
			return nil, err
		}
		s.send.rs = rs
	}
	return s.send.rs, nil
}

// writeError explains a failed write on the real stream: the session's end or this stream's
// cancellation, whichever caused it.
func (s *stream) writeError(err error) error { return s.send.writeError(s.path, err) }

// Close closes the write side: a fin frame marks the final size.
func (s *stream) Close() error {
	s.send.mu.Lock()
	if s.send.err != nil {
		err := s.send.err
		s.send.mu.Unlock()
		s.completeSend()
		return err
	}
	if s.send.state.closed() {
		s.send.mu.Unlock()
		return nil
	}
	if err := s.sess.ctx.Err(); err != nil {
		s.send.mu.Unlock()
		return s.sess.closeErr()
	}
	s.send.state.close()
	off := s.send.offset
	rs, err := s.realStreamLocked()
	s.send.mu.Unlock()
	if err == nil {
		err = rs.writeFrame(s.id, off, nil, true)
	}
	s.endSend(nil)
	s.completeSend()
	if err != nil {
		return s.writeError(err)
	}
	return nil
}

// CancelWrite abandons the write side; the peer's Read fails with code.
func (s *stream) CancelWrite(code StreamErrorCode) {
	s.cancelWrite(code, false)
}

func (s *stream) cancelWrite(code StreamErrorCode, remote bool) {
	s.send.mu.Lock()
	// After Close the fin is on its way over a reliable stream: a cancel (or a STOP_SENDING
	// racing the fin) changes nothing.
	if s.send.state.closed() || s.send.err != nil {
		s.send.mu.Unlock()
		if !remote {
			s.completeSend()
		}
		return
	}
	err := s.streamError(code, remote)
	s.send.err = err
	finalSize := s.send.offset
	s.send.wakeLocked()
	s.send.mu.Unlock()
	s.path.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_StreamReset{StreamReset: &pb.StreamReset{LogicalStreamId: s.id, ErrorCode: uint64(code), FinalSize: finalSize}}})
	s.endSend(err)
	// After a STOP_SENDING the stream completes when the application sees the error (Write,
	// Close or CancelWrite), so that it keeps counting against the peer's limit until then.
	if !remote {
		s.completeSend()
	}
}

// completeSend reports, once, that the application has seen the end of the send half. On the
// primary it waits for the stream's delegations to be resolved and refilled.
func (s *stream) completeSend() {
	s.send.mu.Lock()
	ready := s.send.completion.complete(s.send.err != nil || (s.send.pending == 0 && s.send.refill.Len() == 0 && s.send.filling == 0))
	s.send.mu.Unlock()
	if ready {
		s.sess.streams.finished(s, false, true)
	}
}

// endSend ends the send half once: the real stream goes back to the pool and the stream's
// context is canceled.
func (s *stream) endSend(cause error) {
	s.send.mu.Lock()
	if !s.send.state.end() {
		s.send.mu.Unlock()
		return
	}
	rs := s.send.rs
	s.send.mu.Unlock()
	if rs != nil {
		s.path.pool.release(rs)
	}
	if cause == nil {
		cause = quic.ErrStreamClosed // as in quic-go: context.Cause after Close
	}
	s.cancelCtx(cause)
}

func (s *stream) handleMaxStreamData(max uint64) {
	s.send.mu.Lock()
	s.send.raiseLocked(max)
	s.send.mu.Unlock()
}

func (s *stream) SetReadDeadline(t time.Time) error {
	s.recv.mu.Lock()
	s.recv.deadline = t
	s.recv.mu.Unlock()
	notify(s.recvSignal)
	return nil
}

func (s *stream) SetWriteDeadline(t time.Time) error {
	s.send.setDeadline(t)
	return nil
}

func (s *stream) SetDeadline(t time.Time) error {
	_ = s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}
