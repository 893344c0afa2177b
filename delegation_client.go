package kwik

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/kwik-go/kwik/internal/data"
	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// The client's side of delegation: it records each range the primary reserves
// (handleDelegateRange), forwards it to the secondary (DelegationAssign), accepts the
// secondary's bytes inside that range only, and reports the outcome to the primary
// (DelegationStatus) once the range is complete or its path failed.

// delegationState is what became of a delegationRecord.
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

// clientDelegations index the client's delegation records by delegation ID.
type clientDelegations struct {
	mu   sync.Mutex
	byID map[uint64]*delegationRecord
	// stopped: delegations failed by their progress deadline whose secondary, still alive,
	// may send a little more before it hears to stop (dropped); forgotten once all it said it
	// wrote has come, when its path ends, or (past maxStoppedDelegations) when its stream
	// takes no more data.
	stopped map[uint64]*delegationRecord
}

// heldDelegations (client) are the ranges delegated to paths still joining, held until the
// join ends (JoinPath): then handed to the secondary in the order they came, or refused. Its
// mutex also orders every DelegateRange against the hand-over, and serializes those that come
// on the primary's delegation streams at once (path.readAlone).
type heldDelegations struct {
	mu     sync.Mutex
	byPath map[string]*heldRanges // a path joining since the primary asked for it
}

type heldRanges struct {
	ranges []*pb.DelegateRange
	bytes  int // of their requests and digests
	// presented: the first of them, written behind the client's authentication to the
	// secondary (presendHeld), to be recorded once it answers (recordPresented), with the
	// credit limit each carried.
	presented []presentedRange
}

type presentedRange struct {
	m   *pb.DelegateRange
	max uint64
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

// report tells the primary the outcome of a decided record and forgets it, with what the
// path has delivered so far (the primary's scheduler measures the path's rate from it): its
// QUIC packets' bytes, counted as they come, not its stream data, which a lost packet holds
// back and then releases at once.
func (sess *session) report(d *delegationRecord, st *pb.DelegationStatus) {
	sess.clientDelegs.mu.Lock()
	delete(sess.clientDelegs.byID, d.id)
	sess.clientDelegs.mu.Unlock()
	st.DelegationId = d.id
	st.PathReceived = d.path.conn.ConnectionStats().BytesReceived
	st.ReceivedAtUs = uint64(time.Since(sess.createdAt).Microseconds()) + 1 // never 0: told
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

// handleDelegateRange (client) records a reservation and hands it to the secondary, or holds
// it while its path is joining.
func (sess *session) handleDelegateRange(m *pb.DelegateRange) error {
	sess.held.mu.Lock()
	defer sess.held.mu.Unlock()
	return sess.takeDelegateRange(m, true)
}

// holdJoining starts holding the ranges delegated to path id, which the client now joins.
func (sess *session) holdJoining(id string) {
	sess.held.mu.Lock()
	if sess.held.byPath == nil {
		sess.held.byPath = make(map[string]*heldRanges)
	}
	sess.held.byPath[id] = &heldRanges{}
	sess.held.mu.Unlock()
}

// releaseJoining ends the join of path id: its held ranges go to the secondary (err nil: the
// path is active) or are refused.
func (sess *session) releaseJoining(id string, err error) {
	var ferr error
	sess.held.mu.Lock()
	h := sess.held.byPath[id]
	delete(sess.held.byPath, id)
	var ranges []*pb.DelegateRange
	if h != nil {
		for _, pr := range h.presented { // the join failed before they were recorded
			sess.refuseDelegateRange(pr.m, CodePathDead, "the client could not join the path")
		}
		ranges = h.ranges
	}
	for _, m := range ranges {
		if err != nil {
			sess.refuseDelegateRange(m, CodePathDead, "the client could not join the path")
		} else if ferr = sess.takeDelegateRange(m, false); ferr != nil {
			break
		}
	}
	sess.held.mu.Unlock()
	if ferr != nil {
		// A range the primary should not have sent (it broke the protocol): as if it had
		// come now.
		sess.closeLocal(ferr)
	}
}

// presendHeld writes to w, the control stream of path id being joined, right behind the
// authentication request, the assignments of the ranges held for it, from the first, as long
// as each can be handed over now (its stream read, its start not passed by a reader that
// must check its digests, its request within any secondary's bounds): the secondary takes
// them once it has taken the authentication. They are recorded once the secondary has
// answered (recordPresented), before the path reads any data.
func (sess *session) presendHeld(id string, w *quic.Stream) error {
	sess.held.mu.Lock()
	defer sess.held.mu.Unlock()
	h := sess.held.byPath[id]
	if h == nil {
		return nil
	}
	for len(h.ranges) > 0 {
		m := h.ranges[0]
		st, err := sess.streams.get(m.LogicalStreamId)
		if err != nil || st == nil || len(m.Request) > maxDelegationRequest(minMessageSize) {
			return nil
		}
		st.recv.mu.Lock()
		ok := !st.recv.state.ended() && (len(m.Digests) == 0 || st.recv.buf.ReadOffset() <= m.Offset)
		limit := st.recv.fc.Limit()
		st.recv.mu.Unlock()
		if !ok {
			return nil
		}
		// Presented even if the write fails: the join then fails, and refuses them all.
		h.ranges = h.ranges[1:]
		h.presented = append(h.presented, presentedRange{m, limit})
		if err := writeFrame(w, assignmentOf(m, limit)); err != nil {
			return err
		}
	}
	return nil
}

// assignmentOf is the DelegationAssign that hands range m to its secondary, with credit up to
// limit.
func assignmentOf(m *pb.DelegateRange, limit uint64) *pb.ControlFrame {
	return &pb.ControlFrame{Payload: &pb.ControlFrame_DelegationAssign{DelegationAssign: &pb.DelegationAssign{
		DelegationId: m.DelegationId, LogicalStreamId: m.LogicalStreamId, Offset: m.Offset, Length: m.Length,
		Request: m.Request, MaxOffset: limit, Expiry: m.Expiry, Auth: m.Auth,
	}}}
}

// recordPresented records the ranges presendHeld handed to path p's secondary, which has just
// answered the client's authentication: as any range handed over, without the assignment
// (it has it). One that can no longer be taken (its stream ended, or its reader passed it) is
// reported to the primary and stopped at the secondary, its late bytes dropped.
// It returns what the primary broke of the protocol, if anything (a delegation ID used twice).
func (sess *session) recordPresented(id string, p *path) error {
	sess.held.mu.Lock()
	defer sess.held.mu.Unlock()
	h := sess.held.byPath[id]
	if h == nil {
		return nil
	}
	presented := h.presented
	h.presented = nil
	for _, pr := range presented {
		st, err := sess.streams.get(pr.m.LogicalStreamId)
		if err != nil || st == nil {
			// Gone: its late bytes find no stream and are dropped.
			sess.refuseDelegateRange(pr.m, CodeStreamCreateFailed, "the stream is finished")
			continue
		}
		if err := sess.forwardLocked(pr.m, st, p, pr.m.Offset+pr.m.Length, &pr.max); err != nil {
			return err
		}
	}
	return nil
}

// settleHeld reports complete the ranges of stream id held for paths still joining: the
// stream's reader has read everything (the primary sent those bytes again), so the primary
// need not wait for the joins to end. Their secondaries never hear of them.
func (sess *session) settleHeld(id uint64) { sess.dropHeld(id, "") }

// dropHeld forgets the ranges of stream id held for paths still joining: complete when
// reason is empty, refused with it otherwise (the stream was abandoned).
func (sess *session) dropHeld(id uint64, reason string) {
	sess.held.mu.Lock()
	defer sess.held.mu.Unlock()
	for _, h := range sess.held.byPath {
		kept := h.ranges[:0]
		for _, m := range h.ranges {
			if m.LogicalStreamId != id {
				kept = append(kept, m)
				continue
			}
			h.bytes -= len(m.Request) + len(m.Digests)
			if reason != "" {
				sess.refuseDelegateRange(m, CodeInternal, reason)
				continue
			}
			sess.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegationStatus{DelegationStatus: &pb.DelegationStatus{
				DelegationId: m.DelegationId, Complete: true,
			}}})
		}
		clear(h.ranges[len(kept):])
		h.ranges = kept
	}
}

// refuseDelegateRange answers a range with its whole length missing.
func (sess *session) refuseDelegateRange(m *pb.DelegateRange, code ErrorCode, reason string) {
	sess.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_DelegationStatus{DelegationStatus: &pb.DelegationStatus{
		DelegationId: m.DelegationId, MissingOffset: m.Offset, Remaining: m.Length, ErrorCode: pb.ErrorCode(code), Reason: reason,
	}}})
}

// takeDelegateRange is handleDelegateRange, with sess.held.mu held; hold says whether a range
// for a joining path may be held (not when the join has just ended).
func (sess *session) takeDelegateRange(m *pb.DelegateRange, hold bool) error {
	end := m.Offset + m.Length
	if m.Length == 0 || end < m.Offset || end > 1<<62 {
		return &Error{Code: CodeInvalidFrame, Message: "delegated range out of bounds"}
	}
	if !digestsValid(m.Length, m.Digests, m.DigestBlockSize, sess.conf.initialStreamWindow()) {
		return &Error{Code: CodeInvalidFrame, Message: "delegated range's digests malformed"}
	}
	refuse := func(code ErrorCode, reason string) error {
		sess.refuseDelegateRange(m, code, reason)
		return nil
	}
	st, err := sess.streams.get(m.LogicalStreamId)
	if err != nil {
		return err
	}
	if st == nil {
		return refuse(CodeStreamCreateFailed, "the stream is finished")
	}
	if h := sess.held.byPath[m.PathId]; h != nil && hold {
		// Its path is joining: held until the join ends, within what the secondary itself
		// would hold, digests counted with the requests (a primary that keeps to its bounds
		// never reaches them).
		if len(h.ranges) >= maxSecondaryDelegations || h.bytes+len(m.Request)+len(m.Digests) > maxSecondaryRequestBytes {
			return refuse(CodePacketTooLarge, "too many ranges for a path still joining")
		}
		st.recv.mu.Lock()
		if st.recv.state.ended() {
			// Abandoned (dropHeld has run, or will find nothing of it): refused now.
			st.recv.mu.Unlock()
			return refuse(CodeInternal, "the stream is no longer read")
		}
		h.ranges = append(h.ranges, m)
		h.bytes += len(m.Request) + len(m.Digests)
		// The window widens now, as for a range handed over (below): the reader will wait at
		// this gap until the join ends, and the primary's bytes beyond it need the credit.
		st.recv.fc.AtLeast(uint64(sess.conf.StreamReceiveWindow))
		if read := st.recv.buf.ReadOffset(); end > read && end-read > st.recv.fc.Size() {
			st.recv.fc.AtLeast(end - read)
		}
		grant, wake := st.grantLocked()
		st.recv.mu.Unlock()
		if grant > 0 {
			st.path.ctrl.queueMaxStreamData(st.id, grant)
		}
		if wake {
			sess.serveStalled()
		}
		return nil
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
	return sess.forwardLocked(m, st, p, end, nil)
}

// forwardLocked records range m of stream st for path p and hands it to the secondary, or,
// when presented is not nil, records one the secondary already has (recordPresented) with
// the credit limit it carried. sess.held.mu is held.
func (sess *session) forwardLocked(m *pb.DelegateRange, st *stream, p *path, end uint64, presented *uint64) error {
	stop := func() { // a presented range that fails here: the secondary has it
		if presented != nil {
			p.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_StopSending{StopSending: &pb.StopSending{LogicalStreamId: st.id, DelegationIds: []uint64{m.DelegationId}}}})
		}
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
	if st.recv.state.ended() {
		d.state = delegationFailed
		st.recv.mu.Unlock()
		sess.reportOutcome(d, delegationFailed, d.off, CodeInternal, "the stream is no longer read")
		stop() // its late bytes find the stream ended: dropped
		return nil
	}
	if d.digests != nil && st.recv.buf.ReadOffset() > d.off {
		// The reader already has bytes of the range (the primary's, sent again before this
		// reached us): they cannot be checked any more. The primary sends the range itself.
		d.state = delegationFailed
		if presented != nil {
			sess.stopLocked(d) // the secondary has it: its late bytes are dropped
		}
		st.recv.mu.Unlock()
		sess.reportOutcome(d, delegationFailed, d.off, CodeOffsetMismatch, "the reader is past the range's start")
		stop()
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
	if presented == nil {
		// Queued under recv.mu, so that no credit update can overtake the assignment (the
		// secondary would drop it, not knowing the delegation yet).
		p.ctrl.queue(assignmentOf(m, st.recv.fc.Limit()))
	} else if limit := st.recv.fc.Limit(); limit > *presented {
		p.ctrl.queueMaxStreamData(st.id, limit) // the credit grew since it was presented
	}
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
