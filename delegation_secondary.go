package kwik

import (
	"context"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// The secondary's side of delegation: each DelegationAssign the primary signed becomes a
// delegatedStream that AcceptStream returns; its Writes land at the range's offsets on the
// client, within the credit the client grants.

// secondaryDelegations are a secondary's delegations, each a stream for AcceptStream.
type secondaryDelegations struct {
	mu       sync.Mutex
	accept   []*delegatedStream
	byStream map[uint64]map[*delegatedStream]struct{} // by the client's logical stream ID, for credit
	held     int                                      // delegations pending or accepted and not closed
	reqBytes int                                      // bytes of their requests
	signal   chan struct{}
}

// handleDelegationAssign (secondary) surfaces a delegation as a stream for AcceptStream, once
// it has checked that the primary ordered it (trust.go): an assignment the client forged or
// replayed ends the path, one that expired on the way is refused (the client hears that
// nothing was written, and the primary refills it).
func (sess *session) handleDelegationAssign(p *path, m *pb.DelegationAssign) error {
	end := m.Offset + m.Length
	if m.Length == 0 || end < m.Offset {
		return &Error{Code: CodeInvalidFrame, Message: "delegated range out of bounds"}
	}
	expired, err := sess.verifyAssign(p, m)
	if err != nil {
		return err
	}
	if expired {
		p.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegationDone{DelegationDone: &pb.DelegationDone{DelegationId: m.DelegationId}}})
		return nil
	}
	ds := &delegatedStream{
		sess: sess, p: p, id: m.DelegationId, streamID: m.LogicalStreamId,
		off: m.Offset, length: m.Length, request: m.Request,
	}
	ds.send.wake = make(chan struct{})
	// Credit for the range never reaches past it.
	ds.send.maxOffset = min(m.MaxOffset, end)
	ds.ctx, ds.cancel = context.WithCancelCause(sess.ctx)
	sec := &sess.secondary
	sec.mu.Lock()
	if sec.held >= maxSecondaryDelegations || sec.reqBytes+len(m.Request) > maxSecondaryRequestBytes {
		sec.mu.Unlock()
		return &Error{Code: CodeInvalidFrame, Message: "more delegations than a secondary holds at once"}
	}
	sec.held++
	sec.reqBytes += len(m.Request)
	sec.accept = append(sec.accept, ds)
	set := sec.byStream[ds.streamID]
	if set == nil {
		set = make(map[*delegatedStream]struct{})
		sec.byStream[ds.streamID] = set
	}
	set[ds] = struct{}{}
	sec.mu.Unlock()
	notify(sec.signal)
	return nil
}

// handleDelegationStop (secondary): the client no longer wants the stream's delegated ranges
// (the primary reset it, or the client canceled reading), or, when the frame names
// delegations, those ranges only (they made no progress for their deadline): their Writes
// fail with the code.
func (sess *session) handleDelegationStop(m *pb.StopSending) {
	sec := &sess.secondary
	sec.mu.Lock()
	defer sec.mu.Unlock()
	for ds := range sec.byStream[m.LogicalStreamId] {
		if len(m.DelegationIds) > 0 && !slices.Contains(m.DelegationIds, ds.id) {
			continue
		}
		err := &StreamError{StreamID: quic.StreamID(ds.streamID), ErrorCode: StreamErrorCode(m.ErrorCode), Remote: true}
		ds.send.mu.Lock()
		if ds.send.err == nil {
			ds.send.err = err
		}
		ds.send.wakeLocked()
		ds.send.mu.Unlock()
		ds.cancel(err)
	}
}

// handleDelegationCredit (secondary): the client's reader advanced on a stream.
func (sess *session) handleDelegationCredit(streamID, max uint64) {
	sec := &sess.secondary
	sec.mu.Lock()
	defer sec.mu.Unlock()
	for ds := range sec.byStream[streamID] {
		ds.send.mu.Lock()
		ds.send.raiseLocked(min(max, ds.off+ds.length))
		ds.send.mu.Unlock()
	}
}

// acceptDelegation is a secondary's AcceptStream: the next delegation assigned to it.
func (sess *session) acceptDelegation(ctx context.Context) (*delegatedStream, error) {
	sec := &sess.secondary
	for {
		sec.mu.Lock()
		if err := sess.ctx.Err(); err != nil {
			sec.mu.Unlock()
			return nil, sess.closeErr()
		}
		if ds, ok := acceptFront(&sec.accept, sec.signal); ok {
			sec.mu.Unlock()
			return ds, nil
		}
		sec.mu.Unlock()
		if err := sess.waitAccept(ctx, sec.signal); err != nil {
			return nil, err
		}
	}
}

// errDelegationFull is what a secondary's Write returns past the end of its range.
var errDelegationFull = &Error{Code: CodeOffsetMismatch, Message: "write past the end of the delegated range"}

// delegatedStream is a delegation as a secondary sees it: Read yields the primary's request,
// Write fills the range at the client, Close completes it.
type delegatedStream struct {
	sess     *session
	p        *path
	id       uint64
	streamID uint64
	off      uint64
	length   uint64
	request  []byte

	ctx    context.Context
	cancel context.CancelCauseFunc

	recv struct {
		mu       sync.Mutex
		pos      int
		deadline time.Time
	}
	send struct {
		sendCredit // err: the client stopped the range (STOP_SENDING): it is not wanted
		written    uint64
		closed     bool
		rs         *realStream
	}
}

func (ds *delegatedStream) StreamID() uint64         { return ds.streamID }
func (ds *delegatedStream) PathID() string           { return ds.p.id }
func (ds *delegatedStream) Context() context.Context { return ds.ctx }

func (ds *delegatedStream) Read(b []byte) (int, error) {
	ds.recv.mu.Lock()
	defer ds.recv.mu.Unlock()
	if !ds.recv.deadline.IsZero() && !time.Now().Before(ds.recv.deadline) {
		return 0, errDeadline
	}
	if ds.recv.pos >= len(ds.request) {
		return 0, io.EOF
	}
	n := copy(b, ds.request[ds.recv.pos:])
	ds.recv.pos += n
	return n, nil
}

// Write places b at the next offsets of the delegated range on the client. Past the range's
// end it writes what fits and fails.
func (ds *delegatedStream) Write(b []byte) (int, error) {
	return ds.send.send(ds.sess, ds.streamID, ds.p.peer.maxFrameData, b, &sendCall{
		next: func() (uint64, uint64, error) {
			switch {
			case ds.send.closed:
				return 0, 0, ErrWriteAfterClose
			case ds.send.written == ds.length:
				return 0, 0, errDelegationFull
			}
			return ds.off + ds.send.written, ds.length - ds.send.written, nil
		},
		take: func(off, n uint64) (*realStream, bool, error) {
			if ds.send.closed || ds.send.err != nil || ds.off+ds.send.written != off {
				return nil, false, nil // moved while it waited for its turn
			}
			if ds.send.rs == nil {
				rs, err := ds.p.pool.assign()
				if err != nil {
					return nil, false, err
				}
				ds.send.rs = rs
			}
			ds.send.written += n
			return ds.send.rs, true, nil
		},
		order:  &ds.p.order,
		abort:  ds.ctx.Done(),
		failed: func(err error) error { return ds.send.writeError(ds.p, err) },
	})
}

// Close completes the range: the client learns how much was written; less than the range's
// length makes the delegation fail at the primary with the rest as its undelivered suffix.
func (ds *delegatedStream) Close() error {
	ds.send.mu.Lock()
	if ds.send.closed {
		ds.send.mu.Unlock()
		return nil
	}
	ds.send.closed = true
	ds.send.wakeLocked()
	written, rs := ds.send.written, ds.send.rs
	ds.send.mu.Unlock()
	ds.p.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegationDone{DelegationDone: &pb.DelegationDone{DelegationId: ds.id, Written: written}}})
	if rs != nil {
		ds.p.pool.release(rs)
	}
	sec := &ds.sess.secondary
	sec.mu.Lock()
	if set := sec.byStream[ds.streamID]; set != nil {
		delete(set, ds)
		if len(set) == 0 {
			delete(sec.byStream, ds.streamID)
		}
	}
	sec.held--
	sec.reqBytes -= len(ds.request)
	sec.mu.Unlock()
	ds.cancel(context.Canceled)
	return ds.sess.ctx.Err()
}

// CancelWrite ends the range where it is, like Close: the primary refills the rest.
func (ds *delegatedStream) CancelWrite(StreamErrorCode) { _ = ds.Close() }

// CancelRead drops the rest of the request.
func (ds *delegatedStream) CancelRead(StreamErrorCode) {
	ds.recv.mu.Lock()
	ds.recv.pos = len(ds.request)
	ds.recv.mu.Unlock()
}

func (ds *delegatedStream) SetReadDeadline(t time.Time) error {
	ds.recv.mu.Lock()
	ds.recv.deadline = t
	ds.recv.mu.Unlock()
	return nil
}

func (ds *delegatedStream) SetWriteDeadline(t time.Time) error {
	ds.send.setDeadline(t)
	return nil
}

func (ds *delegatedStream) SetDeadline(t time.Time) error {
	_ = ds.SetReadDeadline(t)
	return ds.SetWriteDeadline(t)
}

func (ds *delegatedStream) Delegate(string, int64, []byte) (*Delegation, error) {
	return nil, ErrNotPrimary
}

func (ds *delegatedStream) WriteAt([]byte, int64) (int, error) { return 0, ErrNotPrimary }
