package kwik

import (
	"bytes"
	"fmt"
	"sync"
	"time"

	"github.com/kwik-go/kwik/internal/data"
	"github.com/kwik-go/kwik/internal/wire/pb"
)

// The primary's side of delegation: Delegate reserves a range of a stream and sends it to the
// client (DelegateRange); the client's DelegationStatus resolves it (handleDelegationStatus);
// WriteAt refills what a failed delegation left undelivered.

// primaryDelegations are the primary's delegations awaiting the client's verdict.
type primaryDelegations struct {
	mu          sync.Mutex
	next        uint64
	byID        map[uint64]*Delegation
	outstanding map[string]outstanding // by path: unresolved delegations, within the secondary's bounds
}

// Delegate reserves the next length bytes of the stream for the secondary on pathID and sends
// it request. The primary's later Writes land after the range.
func (s *stream) Delegate(pathID string, length int64, request []byte) (*Delegation, error) {
	return s.delegate(pathID, -1, length, request, nil, 0)
}

// delegate is Delegate, with the digests of the range's blocks of block bytes (digest.go) when
// digests is not empty. With at >= 0 it delegates instead [at, at+length), a range the
// primary reserved (reserve) and nobody has written or is writing: Fanout hands the tail of its
// own queue to a secondary that would deliver it sooner. That is allowed after Close, like
// WriteAt: the final size already covers the range.
func (s *stream) delegate(pathID string, at, length int64, request, digests []byte, block int64) (*Delegation, error) {
	sess := s.sess
	if sess.role != RolePrimary {
		return nil, ErrNotPrimary
	}
	if length <= 0 || length > 1<<48 {
		return nil, invalidArgument(fmt.Sprintf("kwik: Delegate: length %d out of range", length))
	}
	if len(request)+digestsOverhead(digests) > maxDelegationRequest(s.path.peer.maxMessageSize) {
		return nil, &Error{Code: CodePacketTooLarge, Message: "delegation request too large"}
	}
	if len(digests) > 0 && !digestsValid(uint64(length), digests, uint64(block), s.path.peer.streamWindow) {
		return nil, invalidArgument("kwik: Delegate: digests do not fit the range")
	}
	if pathID == sess.primary.id {
		return nil, &detailError{msg: "kwik: Delegate: the primary path is the primary's own: Write instead", is: ErrPrimaryPath}
	}
	if sess.ctx.Err() != nil {
		return nil, sess.closeErr()
	}
	joining, err := sess.delegationPathError(pathID)
	if err != nil {
		return nil, err
	}
	s.send.mu.Lock()
	if s.send.err != nil {
		err := s.send.err
		s.send.mu.Unlock()
		return nil, err
	}
	if at < 0 && s.send.state.closed() {
		s.send.mu.Unlock()
		return nil, ErrWriteAfterClose
	}
	if at >= 0 && !s.send.refill.ContainsRange(uint64(at), uint64(at)+uint64(length)) {
		s.send.mu.Unlock()
		return nil, &Error{Code: CodeOffsetMismatch, Message: "delegation of a range not reserved, or written already"}
	}
	// The secondary holds a bounded number of delegations (trust.go): past it, it would cut
	// the path off. Checked before the range is reserved.
	if err := sess.delegs.reserve(pathID, len(request)); err != nil {
		s.send.mu.Unlock()
		return nil, err
	}
	off := s.send.offset
	if at < 0 {
		s.send.offset += uint64(length)
	} else {
		// Still owed: if the delegation fails, its suffix is the primary's to write again.
		off = uint64(at)
		s.send.refill.Remove(off, off+uint64(length))
	}
	s.send.pending++
	s.send.mu.Unlock()

	d := &Delegation{PathID: pathID, Offset: int64(off), Length: length, sess: sess, st: s, done: make(chan struct{}), reqLen: len(request)}
	m := &pb.DelegateRange{
		LogicalStreamId: s.id, Offset: off, Length: uint64(length), PathId: pathID, Request: bytes.Clone(request),
		ProgressTimeoutMs: uint64(sess.conf.DelegationProgressTimeout.Milliseconds()),
	}
	if len(digests) > 0 {
		m.Digests, m.DigestBlockSize = digests, uint64(block)
	}
	// Queued in the order of their IDs, which the secondaries take in any order within a
	// window (trust.go). A range for an active path goes on a stream of its own to a client
	// that takes them: a packet of the control stream lost on the primary's path, whose queue
	// its own bytes fill, holds up only the frames behind it, and the secondaries would run
	// dry for a round trip and more (traced at 40 ms one way: nineteen delegations held 360
	// ms behind one lost as the primary's slow start overflowed its path). One for a path
	// still joining follows the join's notice on the control stream, which tells the client
	// to hold it.
	f := &pb.ControlFrame{Payload: &pb.ControlFrame_DelegateRange{DelegateRange: m}}
	sess.delegs.mu.Lock()
	d.id = sess.delegs.next
	sess.delegs.next++
	sess.delegs.byID[d.id] = d
	m.DelegationId = d.id
	sess.signDelegation(m)
	if !joining && s.path.peer.delegationStreams {
		s.path.ctrl.queueAlone(f)
	} else {
		s.path.ctrl.queue(f)
	}
	sess.delegs.mu.Unlock()
	return d, nil
}

// reserve sets the next n bytes of the stream aside for the primary to write later with
// WriteAt, in any order with its delegations (Fanout's own writer does): they count as a
// range to refill. It returns their offset.
func (s *stream) reserve(n int64) (int64, error) {
	s.send.mu.Lock()
	defer s.send.mu.Unlock()
	if s.send.err != nil {
		return 0, s.send.err
	}
	if s.send.state.closed() {
		return 0, ErrWriteAfterClose
	}
	off := s.send.offset
	s.send.offset += uint64(n)
	s.send.owed.Add(off, off+uint64(n))
	s.send.refill.Add(off, off+uint64(n))
	return int64(off), nil
}

// handleDelegationStatus (primary) resolves a delegation with the client's verdict.
func (sess *session) handleDelegationStatus(m *pb.DelegationStatus) error {
	d := take(&sess.delegs.mu, sess.delegs.byID, m.DelegationId)
	if d == nil {
		return nil
	}
	sess.delegs.release(d.PathID, d.reqLen)
	start, end := uint64(d.Offset), uint64(d.Offset+d.Length)
	d.received = fanoutCount{bytes: int64(min(m.PathReceived, 1<<62)), at: time.Duration(min(m.ReceivedAtUs, 1<<62/1000)) * time.Microsecond}
	failed := !m.Complete
	missing := min(max(m.MissingOffset, start), end)
	if failed {
		sess.log.Debug("kwik: delegation failed", "path", d.PathID, "offset", missing, "remaining", end-missing, "reason", m.Reason)
		code := ErrorCode(m.ErrorCode)
		if code == 0 {
			code = CodeInternal
		}
		d.err = &DelegationError{PathID: d.PathID, Offset: int64(missing), Remaining: int64(end - missing),
			Err: &Error{Code: code, Message: m.Reason, Remote: true}}
	}
	// Record the refill range before waking Wait: its caller may WriteAt at once.
	d.st.delegationResolved(failed, missing, end)
	if failed && missing < end {
		d.st.send.mu.Lock()
		d.st.send.failed = append(d.st.send.failed, d)
		d.st.send.wakeLocked() // a Write waiting for credit behind it learns of it
		d.st.send.mu.Unlock()
	}
	close(d.done)
	return nil
}

// delegationResolved updates the send side's accounting: a failed range's missing suffix may
// now be filled with WriteAt, and the stream completes only once nothing is owed. A call
// waiting for credit learns of the failure (failedBehindLocked).
func (s *stream) delegationResolved(failed bool, from, to uint64) {
	s.send.mu.Lock()
	s.send.pending--
	if failed && from < to {
		s.send.owed.Add(from, to)
		s.send.refill.Add(from, to)
	}
	want := s.send.completion.wanted()
	s.send.mu.Unlock()
	if want {
		s.completeSend()
	}
}

// WriteAt fills the undelivered suffix of a failed delegation (see DelegationError), or a
// part of it. It is allowed after Close: the final size already covers it. Bytes of p that
// the primary already refilled (or another WriteAt is refilling) are not sent again: WriteAt
// counts them as written, so that refilling what both a Write and Wait reported is harmless.
// Blocked on credit behind another failed delegation that nobody waits for, it returns, as
// Write does, an error wrapping that one's *DelegationError.
func (s *stream) WriteAt(p []byte, off int64) (int, error) { return s.writeAt(p, off, false) }

// duplicate sends again bytes at off that a delegation still owes (Fanout's end game: the
// primary, idle, sends a slow secondary's last pieces itself; the client keeps the first
// copy). The delegation is unaffected.
func (s *stream) duplicate(p []byte, off int64) (int, error) { return s.writeAt(p, off, true) }

func (s *stream) writeAt(p []byte, off int64, dup bool) (int, error) {
	if s.sess.role != RolePrimary {
		return 0, ErrNotPrimary
	}
	if off < 0 {
		return 0, invalidArgument("kwik: WriteAt: negative offset")
	}
	start, end := uint64(off), uint64(off)+uint64(len(p))
	s.send.mu.Lock()
	if s.send.err != nil {
		err := s.send.err
		s.send.mu.Unlock()
		return 0, err
	}
	if !dup && !s.send.owed.ContainsRange(start, end) || dup && end > s.send.offset {
		s.send.mu.Unlock()
		return 0, &Error{Code: CodeOffsetMismatch, Message: "WriteAt outside the undelivered part of a failed delegation"}
	}
	// The parts of p still to send: all of it for a duplicate; for a refill, what nobody has
	// written or is writing yet, which this call now owns.
	parts := []data.Range{{Start: start, End: end}}
	if !dup {
		parts = s.send.refill.Intersect(nil, start, end)
		for _, r := range parts {
			s.send.refill.Remove(r.Start, r.End)
			s.send.filling += r.End - r.Start
		}
	}
	s.send.mu.Unlock()
	if len(parts) == 0 || start == end {
		return len(p), nil
	}
	rs, err := s.retainRealStream()
	var i int
	var sent uint64 // of parts[i]
	if err == nil {
		defer s.path.pool.release(rs)
		for ; i < len(parts); i++ {
			r := parts[i]
			pos := r.Start
			var n int
			call := &sendCall{
				next: func() (uint64, uint64, error) { return pos, r.End - pos, nil },
				take: func(off, n uint64) (*realStream, bool, error) {
					pos += n
					return rs, true, nil
				},
				failed: s.writeError,
			}
			if !dup {
				call.blocked = s.failedBehindLocked
			}
			n, err = s.send.send(s.sess, s.id, s.path.peer.maxFrameData, p[r.Start-start:r.End-start], call)
			sent = uint64(n)
			if err != nil {
				break
			}
		}
	}
	if dup {
		if err != nil {
			return int(sent), err
		}
		return len(p), nil
	}
	// What this call did not send is owed again, for a later WriteAt.
	s.send.mu.Lock()
	for j, r := range parts {
		s.send.filling -= r.End - r.Start
		switch {
		case j == i:
			s.send.refill.Add(r.Start+sent, r.End)
		case j > i:
			s.send.refill.Add(r.Start, r.End)
		}
	}
	want := s.send.completion.wanted()
	s.send.mu.Unlock()
	if want {
		s.completeSend()
	}
	if err != nil {
		return int(parts[i].Start + sent - start), err
	}
	return len(p), nil
}

// retainRealStream returns a real stream for a WriteAt, which the caller gives back to the
// pool: the stream's own while its send side holds one (the bytes then follow its Writes), or
// one from the pool after Close.
func (s *stream) retainRealStream() (*realStream, error) {
	s.send.mu.Lock()
	defer s.send.mu.Unlock()
	if s.send.rs != nil && s.send.state != sendEnded {
		s.path.pool.retain(s.send.rs)
		return s.send.rs, nil
	}
	return s.path.pool.assign()
}

// failedBehindLocked returns, for a call blocked on credit at off, an error wrapping the
// *DelegationError of the failed delegation with the lowest undelivered suffix that begins
// below off and is still unfilled, unless the application waits for that delegation (Wait, Done): that one
// refills it, and the call waits. The reader cannot pass such a gap, so the credit the call
// waits for would never come. s.send.mu is held.
func (s *stream) failedBehindLocked(off uint64) error {
	var found *DelegationError
	keep := s.send.failed[:0]
	for _, d := range s.send.failed {
		de := d.err.(*DelegationError)
		from, to := uint64(de.Offset), uint64(de.Offset+de.Remaining)
		if d.claimed.Load() || !s.send.refill.Overlaps(from, to) {
			continue // someone refills it, or it is refilled
		}
		keep = append(keep, d)
		if from < off && (found == nil || de.Offset < found.Offset) {
			found = de // the lowest: the gap the reader meets first
		}
	}
	clear(s.send.failed[len(keep):])
	s.send.failed = keep
	if found != nil {
		return &blockedError{de: found}
	}
	return nil
}

// blockedError is what Write and WriteAt return when they wait for credit behind a failed
// delegation's gap that the application does not refill otherwise.
type blockedError struct{ de *DelegationError }

func (e *blockedError) Error() string {
	return "kwik: waiting for credit behind a failed delegation: " + e.de.Error()
}

// Unwrap returns the *DelegationError: errors.As finds it.
func (e *blockedError) Unwrap() error { return e.de }
