package kwik

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwik-go/kwik/internal/data"
	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// Delegation: the primary reserves a byte range of one of its streams for a secondary.
//
//	primary   Delegate ──DelegateRange──▶ client ──DelegationAssign──▶ secondary (AcceptStream)
//	secondary Write    ──DataFrames (its own data plane) ─────────────▶ client, at the range's offsets
//	secondary Close    ──DelegationDone──▶ client
//	client             ──DelegationStatus (complete, or the missing suffix)──▶ primary (Wait)
//
// The client accepts a secondary's bytes only inside ranges delegated to its path, and grants it
// the stream's credit as its reader advances, so receive memory stays bounded by the stream's
// window whichever source runs ahead. State: on the primary, Delegation objects (session.delegs)
// and the stream's pending/refill accounting (stream.send); on the client, delegationRecords,
// guarded by their stream's recv.mu and indexed in session.clientDelegs; on a secondary,
// delegatedStreams (session.secondary).

// Delegation is a byte range of a stream that a secondary server fills.
type Delegation struct {
	PathID string // the secondary's path
	Offset int64  // the range's first byte in the stream
	Length int64  // the range's length

	id     uint64
	sess   *session
	st     *stream
	done   chan struct{}
	err    error // set before done is closed
	reqLen int   // counted against the path's outstanding requests until resolved
	// claimed: the application waits for the outcome (Wait or Done was called), so it
	// refills a failure itself; Write and WriteAt do not report it (failedBehindLocked).
	claimed atomic.Bool
}

// Done is closed once the outcome is known; Wait then returns it at once. Calling Done, as
// calling Wait, tells the stream that the caller handles this delegation's failure: a Write
// blocked behind it then waits for the caller's refill instead of reporting it.
func (d *Delegation) Done() <-chan struct{} {
	d.claimed.Store(true)
	return d.done
}

// Wait returns nil once the client holds the whole range, or a *DelegationError giving the
// undelivered suffix (fill it with Stream.WriteAt), or ctx's or the session's error. Calling
// Wait tells the stream that the caller refills this delegation's failure: a Write blocked
// behind it waits for that refill instead of reporting it (see Stream.Write).
func (d *Delegation) Wait(ctx context.Context) error {
	d.claimed.Store(true)
	select {
	case <-d.done:
		return d.err
	case <-ctx.Done():
		return ctx.Err()
	case <-d.sess.ctx.Done():
		select {
		case <-d.done:
			return d.err
		default:
			return d.sess.closeErr()
		}
	}
}

// DelegationError reports the part of a delegated range that the client did not receive.
type DelegationError struct {
	PathID    string // the secondary's path
	Offset    int64  // first byte not delivered
	Remaining int64  // bytes from Offset to the end of the range
	Err       error  // why: the path died, or the secondary closed short
}

// Error says which path left how many bytes undelivered, from where, and why.
func (e *DelegationError) Error() string {
	return fmt.Sprintf("kwik: delegation to path %s: %d bytes undelivered from offset %d: %v", e.PathID, e.Remaining, e.Offset, e.Err)
}

// Unwrap returns why: errors.Is(err, ErrPathDead) and so on work through it.
func (e *DelegationError) Unwrap() error { return e.Err }

// maxDelegationRequest bounds a delegation's request so that it fits every hop's messages.
func maxDelegationRequest(maxMessageSize int) int { return maxMessageSize - rawOverhead }

// ---- primary ----

type primaryDelegations struct {
	mu          sync.Mutex
	next        uint64
	byID        map[uint64]*Delegation
	outstanding map[string]outstanding // by path: unresolved delegations, within the secondary's bounds
}

// Delegate reserves the next length bytes of the stream for the secondary on pathID and sends
// it request. The primary's later Writes land after the range.
func (s *stream) Delegate(pathID string, length int64, request []byte) (*Delegation, error) {
	return s.delegate(pathID, length, request, nil, 0)
}

// delegate is Delegate, with the digests of the range's blocks of block bytes (digest.go) when
// digests is not empty.
func (s *stream) delegate(pathID string, length int64, request, digests []byte, block int64) (*Delegation, error) {
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
	if err := sess.pathError(pathID); err != nil {
		return nil, err
	}
	s.send.mu.Lock()
	if s.send.err != nil {
		err := s.send.err
		s.send.mu.Unlock()
		return nil, err
	}
	if s.send.closed {
		s.send.mu.Unlock()
		return nil, ErrWriteAfterClose
	}
	// The secondary holds a bounded number of delegations (trust.go): past it, it would cut
	// the path off. Checked before the range is reserved.
	if err := sess.delegs.reserve(pathID, len(request)); err != nil {
		s.send.mu.Unlock()
		return nil, err
	}
	off := s.send.offset
	s.send.offset += uint64(length)
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
	// Queued in the order of their IDs: a secondary takes only increasing ones (trust.go).
	sess.delegs.mu.Lock()
	d.id = sess.delegs.next
	sess.delegs.next++
	sess.delegs.byID[d.id] = d
	m.DelegationId = d.id
	sess.signDelegation(m)
	s.path.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegateRange{DelegateRange: m}})
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
	if s.send.closed {
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
	want := s.send.completeWanted
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
	want := s.send.completeWanted
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
	if s.send.rs != nil && !s.send.done {
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

// ---- client ----

type delegationState int

const (
	delegationActive delegationState = iota
	delegationComplete
	delegationFailed
)

// delegationRecord is the client's view of one delegation. Fields below st are guarded by
// st.recv.mu.
type delegationRecord struct {
	id       uint64
	st       *stream
	path     *path
	off, end uint64

	got       data.RangeSet // bytes received from the secondary within the range
	written   uint64        // what the secondary said it wrote, once doneKnown
	doneKnown bool
	state     delegationState

	// The progress deadline (progress.go): the range fails once it has received nothing for
	// timeout (0: the path's default) since `since`, while eligible.
	timeout time.Duration
	since   time.Time // the last byte, or when the range last became its secondary's next with credit

	// Content digests (digest.go): the SHA-256 of each block of the range, or nil. The
	// reader reads no further than verified, the end of the blocks checked so far.
	digests  []byte
	block    uint64
	verified uint64
}

type clientDelegations struct {
	mu   sync.Mutex
	byID map[uint64]*delegationRecord
	// stopped: delegations failed by their progress deadline whose secondary, still alive,
	// may send a little more before it hears to stop (dropped); forgotten once all it said it
	// wrote has come, when its path ends, or (past maxStoppedDelegations) when its stream
	// takes no more data.
	stopped map[uint64]*delegationRecord
}

// outcome decides a record once it can. st.recv.mu is held.
func (d *delegationRecord) outcome() delegationState {
	if d.state != delegationActive {
		return d.state
	}
	switch {
	case d.got.ContainsRange(d.off, d.end):
		d.state = delegationComplete
	case d.doneKnown && d.got.ContainsRange(d.off, d.off+d.written):
		d.state = delegationFailed
	}
	return d.state
}

// firstMissing is the first byte of the range the client does not hold. st.recv.mu is held.
func (d *delegationRecord) firstMissing() uint64 {
	// got lies within [off, end): the first missing byte is off, or the end of the range
	// of got that starts there.
	if r := d.got.Ranges(); len(r) > 0 && r[0].Start <= d.off {
		return min(r[0].End, d.end)
	}
	return d.off
}

// detach removes a decided record from its stream. st.recv.mu is held. The slice is
// replaced, not edited, since callers iterate copies of it outside the lock.
func (d *delegationRecord) detach() {
	head := d.st.headOf(d.path)
	d.st.recv.delegs = without(d.st.recv.delegs, d)
	if head == d {
		// The secondary's next range of the stream is now the following one: its
		// progress clock starts now.
		if h := d.st.headOf(d.path); h != nil {
			h.since = later(h.since, time.Now())
		}
	}
}

// headOf is the active delegation of path p with the lowest offset in the stream: the range
// p sends first (sendOrder). st.recv.mu is held.
func (s *stream) headOf(p *path) *delegationRecord {
	var h *delegationRecord
	for _, d := range s.recv.delegs {
		if d.path == p && d.state == delegationActive && (h == nil || d.off < h.off) {
			h = d
		}
	}
	return h
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// without returns a new slice holding l's elements but x.
func without[T comparable](l []T, x T) []T {
	out := make([]T, 0, len(l))
	for _, o := range l {
		if o != x {
			out = append(out, o)
		}
	}
	return out
}

// report tells the primary the outcome of a decided record and forgets it.
func (sess *session) report(d *delegationRecord, st *pb.DelegationStatus) {
	sess.clientDelegs.mu.Lock()
	delete(sess.clientDelegs.byID, d.id)
	sess.clientDelegs.mu.Unlock()
	st.DelegationId = d.id
	sess.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegationStatus{DelegationStatus: st}})
}

func (sess *session) reportOutcome(d *delegationRecord, state delegationState, missing uint64, code ErrorCode, reason string) {
	if state == delegationFailed && missing >= d.end {
		// The client holds the whole range all the same, verified (the primary sent it
		// again): nothing is missing.
		state = delegationComplete
	}
	switch state {
	case delegationComplete:
		sess.report(d, &pb.DelegationStatus{Complete: true})
	case delegationFailed:
		sess.report(d, &pb.DelegationStatus{MissingOffset: missing, Remaining: d.end - missing, ErrorCode: pb.ErrorCode(code), Reason: reason})
	}
}

// handleDelegateRange (client) records a reservation and hands it to the secondary.
func (sess *session) handleDelegateRange(m *pb.DelegateRange) error {
	end := m.Offset + m.Length
	if m.Length == 0 || end < m.Offset || end > 1<<62 {
		return &Error{Code: CodeInvalidFrame, Message: "delegated range out of bounds"}
	}
	if !digestsValid(m.Length, m.Digests, m.DigestBlockSize, sess.conf.initialStreamWindow()) {
		return &Error{Code: CodeInvalidFrame, Message: "delegated range's digests malformed"}
	}
	refuse := func(code ErrorCode, reason string) error {
		sess.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegationStatus{DelegationStatus: &pb.DelegationStatus{
			DelegationId: m.DelegationId, MissingOffset: m.Offset, Remaining: m.Length, ErrorCode: pb.ErrorCode(code), Reason: reason,
		}}})
		return nil
	}
	st, err := sess.streams.get(m.LogicalStreamId)
	if err != nil {
		return err
	}
	if st == nil {
		return refuse(CodeStreamCreateFailed, "the stream is finished")
	}
	p, err := sess.livePath(m.PathId)
	if err != nil {
		var ke *Error
		errors.As(err, &ke)
		return refuse(ke.Code, ke.Message)
	}
	if p.isPrimary {
		return refuse(CodePathNotFound, "delegation to the primary path")
	}
	if len(m.Request) > maxDelegationRequest(p.peer.maxMessageSize) {
		return refuse(CodePacketTooLarge, "request larger than the secondary accepts")
	}
	if time.Now().UnixNano() < p.stalledUntil.Load() {
		return refuse(CodeDelegationTimeout, "the secondary delivered nothing for its last ranges")
	}
	now := time.Now()
	d := &delegationRecord{id: m.DelegationId, st: st, path: p, off: m.Offset, end: end,
		timeout: time.Duration(min(m.ProgressTimeoutMs, maxProgressTimeoutMs)) * time.Millisecond, since: now}
	if len(m.Digests) > 0 {
		d.digests, d.block, d.verified = m.Digests, m.DigestBlockSize, m.Offset
	}
	sess.clientDelegs.mu.Lock()
	if sess.clientDelegs.byID[d.id] != nil {
		sess.clientDelegs.mu.Unlock()
		return &Error{Code: CodeInvalidFrame, Message: "delegation ID reused"}
	}
	sess.clientDelegs.byID[d.id] = d
	sess.clientDelegs.mu.Unlock()

	st.recv.mu.Lock()
	if st.recv.done {
		d.state = delegationFailed
		st.recv.mu.Unlock()
		sess.reportOutcome(d, delegationFailed, d.off, CodeInternal, "the stream is no longer read")
		return nil
	}
	if d.digests != nil && st.recv.buf.ReadOffset() > d.off {
		// The reader already has bytes of the range (the primary's, sent again before this
		// reached us): they cannot be checked any more. The primary sends the range itself.
		d.state = delegationFailed
		st.recv.mu.Unlock()
		sess.reportOutcome(d, delegationFailed, d.off, CodeOffsetMismatch, "the reader is past the range's start")
		return nil
	}
	var grant uint64
	var wake bool
	if !slices.Contains(st.recv.fed, p) {
		st.recv.fed = append(st.recv.fed, p)
		// A path starts feeding the stream: the stream gets its whole window at once
		// (StreamReceiveWindow, lent by the session's budget like any growth). Its reader now
		// waits at the gaps of the slowest source, whose trip through the primary is longer,
		// and the window must hold what the others send meanwhile: reads that slow source
		// paces cannot show that need to the auto-tuning, which also holds still while the
		// reader waits at a gap. Granted before the assignment, which carries the new limit.
		st.recv.fc.AtLeast(uint64(sess.conf.StreamReceiveWindow))
		grant, wake = st.grantLocked()
	}
	if read := st.recv.buf.ReadOffset(); end > read && end-read > st.recv.fc.Size() {
		// The primary put the whole range in flight: the window lets it through (within its
		// cap), or the secondary would stop short of its end and hold the reader at its gap.
		st.recv.fc.AtLeast(end - read)
		if g, w := st.grantLocked(); g > 0 {
			grant, wake = g, wake || w
		}
	}
	st.recv.delegs = append(slices.Clip(st.recv.delegs), d) // copy on write, as detach
	if d.digests != nil {
		// The reader may already wait at the range's first block: its credit must cover it.
		if g, w := st.grantLocked(); g > 0 {
			grant, wake = g, wake || w
		}
	}
	// Queued under recv.mu, so that no credit update can overtake the assignment (the
	// secondary would drop it, not knowing the delegation yet).
	p.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegationAssign{DelegationAssign: &pb.DelegationAssign{
		DelegationId: d.id, LogicalStreamId: st.id, Offset: d.off, Length: m.Length, Request: m.Request, MaxOffset: st.recv.fc.Limit(),
		Expiry: m.Expiry, Auth: m.Auth,
	}}})
	st.recv.mu.Unlock()
	if grant > 0 {
		st.path.ctrl.queueMaxStreamData(st.id, grant)
	}
	if wake {
		sess.serveStalled()
	}
	if p.ctx.Err() != nil {
		// The path died while we recorded the range: its failure handler may have missed it.
		sess.failDelegations(p, CodePathDead, "path died")
	}
	notify(p.progressPoke) // its watchdog keeps the range's progress deadline
	return nil
}

// delegationFor finds the active delegation of path p covering [off, end). st.recv.mu is held.
func (s *stream) delegationFor(p *path, off, end uint64) *delegationRecord {
	for _, d := range s.recv.delegs {
		if d.path == p && off >= d.off && end <= d.end && d.state == delegationActive {
			return d
		}
	}
	return nil
}

// handleDelegationDone (client): the secondary has written all it will.
func (sess *session) handleDelegationDone(p *path, m *pb.DelegationDone) error {
	sess.clientDelegs.mu.Lock()
	d := sess.clientDelegs.byID[m.DelegationId]
	if s := sess.clientDelegs.stopped[m.DelegationId]; d == nil && s != nil && s.path == p {
		// A range failed by its deadline: its secondary has stopped writing it. Forgotten
		// once what it wrote has come.
		sess.clientDelegs.mu.Unlock()
		if m.Written > s.end-s.off {
			return &Error{Code: CodeOffsetMismatch, Message: "secondary claims to have written past its range"}
		}
		s.st.recv.mu.Lock()
		if !s.doneKnown {
			s.doneKnown, s.written = true, m.Written
			sess.forgetStoppedLocked(s)
		}
		s.st.recv.mu.Unlock()
		return nil
	}
	sess.clientDelegs.mu.Unlock()
	if d == nil || d.path != p {
		return nil // already decided (a late or duplicate notice), or not this path's
	}
	if m.Written > d.end-d.off {
		return &Error{Code: CodeOffsetMismatch, Message: "secondary claims to have written past its range"}
	}
	st := d.st
	st.recv.mu.Lock()
	if d.state != delegationActive {
		st.recv.mu.Unlock()
		return nil
	}
	d.doneKnown, d.written = true, m.Written
	state := d.outcome()
	var missing uint64
	if state != delegationActive {
		missing = d.settleLocked()
	}
	st.recv.mu.Unlock()
	sess.reportOutcome(d, state, missing, CodeOffsetMismatch, "the secondary closed short")
	return nil
}

// failDelegations (client) fails every active delegation of a path that died or was removed.
func (sess *session) failDelegations(p *path, code ErrorCode, reason string) {
	sess.clientDelegs.mu.Lock()
	var ds, stopped []*delegationRecord
	for _, d := range sess.clientDelegs.byID {
		if d.path == p {
			ds = append(ds, d)
		}
	}
	for id, d := range sess.clientDelegs.stopped {
		if d.path == p {
			delete(sess.clientDelegs.stopped, id)
			stopped = append(stopped, d)
		}
	}
	sess.clientDelegs.mu.Unlock()
	for _, d := range ds {
		sess.failDelegation(d, code, reason)
	}
	for _, d := range stopped {
		d.st.recv.mu.Lock()
		d.st.recv.stopped = without(d.st.recv.stopped, d)
		d.st.recv.mu.Unlock()
	}
}

func (sess *session) failDelegation(d *delegationRecord, code ErrorCode, reason string) {
	d.st.recv.mu.Lock()
	missing, ok := d.failLocked()
	d.st.recv.mu.Unlock()
	if ok {
		sess.reportOutcome(d, delegationFailed, missing, code, reason)
	}
}

// failLocked decides an active record as failed and detaches it, returning the first byte the
// client misses; ok is false if the record was already decided. st.recv.mu is held.
func (d *delegationRecord) failLocked() (missing uint64, ok bool) {
	if d.state != delegationActive {
		return 0, false
	}
	d.state = delegationFailed
	return d.settleLocked(), true
}

// settleLocked detaches a record just decided and returns the first byte the client misses of
// it. With digests, that is the first byte not verified: the rest, whoever sent it, is
// discarded, so that the primary's refill replaces it. st.recv.mu is held.
func (d *delegationRecord) settleLocked() (missing uint64) {
	missing = d.firstMissing()
	if d.state == delegationFailed && d.digests != nil {
		missing = d.verified
		d.st.discardLocked(d.verified, d.end)
	}
	d.detach()
	return missing
}

// ---- secondary ----

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

// stopDelegations (client) tells the secondaries of a stream's delegations, which just
// failed, that their ranges are not wanted any more.
func (sess *session) stopDelegations(delegs []*delegationRecord, id uint64, code StreamErrorCode) {
	told := make(map[*path]bool, len(delegs))
	for _, d := range delegs {
		if !told[d.path] {
			told[d.path] = true
			d.path.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_StopSending{StopSending: &pb.StopSending{LogicalStreamId: id, ErrorCode: uint64(code)}}})
		}
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

func (sess *session) acceptDelegation(ctx context.Context) (*delegatedStream, error) {
	sec := &sess.secondary
	for {
		sec.mu.Lock()
		if err := sess.ctx.Err(); err != nil {
			sec.mu.Unlock()
			return nil, sess.closeErr()
		}
		if len(sec.accept) > 0 {
			ds := sec.accept[0]
			sec.accept[0] = nil
			sec.accept = sec.accept[1:]
			if len(sec.accept) > 0 {
				notify(sec.signal)
			}
			sec.mu.Unlock()
			return ds, nil
		}
		sec.mu.Unlock()
		select {
		case <-sec.signal:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-sess.ctx.Done():
			return nil, sess.closeErr()
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
	ds.send.mu.Lock()
	ds.send.deadline = t
	ds.send.wakeLocked()
	ds.send.mu.Unlock()
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
