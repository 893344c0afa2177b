package kwik

import (
	"fmt"
	"math"
	"time"

	"github.com/kwik-go/kwik/internal/wire"
	"github.com/kwik-go/kwik/internal/wire/pb"
)

// Progress deadlines of delegations (client). A secondary that hangs (it accepted its ranges,
// answers heartbeats, and never writes) would hold the stream's reader at its first range
// forever: its path lives. So the client fails a delegated range that receives nothing for
// its progress timeout (the primary's Config.DelegationProgressTimeout, or a default from the
// paths' RTTs and the secondary's rate), as it fails a dead path's: the primary hears the
// undelivered suffix (KWIK_DELEGATION_TIMEOUT) and refills it, and the secondary is told to
// stop (StopSending naming the delegations).
//
// The clock of a range runs only while it is eligible: it is its secondary's next range of
// the stream (the lowest offset, which sendOrder sends first: later ones wait for it) and the
// client's credit reaches its first missing byte. It restarts at every byte received and
// whenever the range becomes eligible (the range before it resolved, or credit came). When a
// range expires and its secondary delivered nothing at all meanwhile, every range of that
// secondary fails at once, and new ones are refused at once for stalledFor timeouts, unless
// it sends something meanwhile: a hung secondary costs one timeout, not one per range.
//
// State: the records' since and timeout fields are guarded by their stream's recv.mu;
// path.lastDelegated is an atomic; the rate estimate is the watchdog's own. The check runs on
// the watchdog goroutine of the client's secondary path (path.watch), woken by a timer, its
// heartbeat ticker, and progressPoke when a range is assigned.

const (
	// maxProgressTimeoutMs caps what a primary may ask for (an hour).
	maxProgressTimeoutMs = 3600_000
	// Default progress timeout: at least minProgressTimeout and progressRTTs round trips of
	// the secondary's path plus the primary's, plus two frames of every stream the secondary
	// serves at its rate; at most maxDefaultProgressTimeout.
	minProgressTimeout        = time.Second
	progressRTTs              = 8
	maxDefaultProgressTimeout = 30 * time.Second
	// maxStoppedDelegations bounds the failed ranges whose late bytes the client drops
	// silently; past it, a secondary that keeps writing a stopped range is cut off
	// (KWIK_OFFSET_MISMATCH), as for any range not its own.
	maxStoppedDelegations = 1024
	// stalledFor is, in progress timeouts, how long the client refuses new ranges to a
	// secondary that delivered nothing at all for one (unless it sends a byte meanwhile):
	// a hung secondary then costs the primary one timeout, not one per range it delegates.
	stalledFor = 4
)

// progressState is the watchdog's estimate of what its secondary path delivers.
type progressState struct {
	rate      float64 // bytes/s: the best recent delivery rate, halving every 10 s
	lastBytes uint64
	lastAt    time.Time
}

// defaultProgressTimeout is the progress timeout of a range whose primary left it to the
// client, on secondary path p serving streams streams at rate bytes/s (0: unknown).
func (p *path) defaultProgressTimeout(streams int, rate float64) time.Duration {
	d := max(minProgressTimeout, progressRTTs*(p.smoothedRTT()+p.sess.primary.smoothedRTT()))
	if rate > 0 {
		frames := float64(2 * streams * wire.MaxFrameData(p.sess.conf.MaxMessageSize))
		d += time.Duration(frames / rate * float64(time.Second))
	}
	return min(d, maxDefaultProgressTimeout)
}

// checkProgress fails the delegations of secondary path p whose progress deadline passed, and
// returns how long to wait before the next check (0: no delegation to watch).
func (p *path) checkProgress(now time.Time, ps *progressState) time.Duration {
	if el := now.Sub(ps.lastAt); el >= 100*time.Millisecond {
		b := p.stats.bytesReceived.Load()
		if !ps.lastAt.IsZero() {
			ps.rate = max(float64(b-ps.lastBytes)/el.Seconds(), ps.rate*math.Pow(0.5, el.Seconds()/10))
		}
		ps.lastBytes, ps.lastAt = b, now
	}
	sess := p.sess
	sess.clientDelegs.mu.Lock()
	var ds []*delegationRecord
	streams := make(map[*stream]bool)
	for _, d := range sess.clientDelegs.byID {
		if d.path == p {
			ds = append(ds, d)
			streams[d.st] = true
		}
	}
	sess.clientDelegs.mu.Unlock()
	if len(ds) == 0 {
		return 0
	}
	def := p.defaultProgressTimeout(len(streams), ps.rate)
	var (
		expired  []*delegationRecord
		next     time.Time
		shortest = time.Duration(math.MaxInt64)
		longest  time.Duration // of the expired ones
		quiet    time.Time     // the earliest start of an expired one's period without progress
	)
	for _, d := range ds {
		st := d.st
		st.recv.mu.Lock()
		if d.state != delegationActive {
			st.recv.mu.Unlock()
			continue
		}
		timeout := d.timeout
		if timeout == 0 {
			timeout = def
		}
		shortest = min(shortest, timeout)
		eligible := st.headOf(p) == d && d.firstMissing() < st.recv.fc.Limit()
		since := d.since
		deadline := since.Add(timeout)
		st.recv.mu.Unlock()
		switch {
		case !eligible:
		case !now.Before(deadline):
			expired = append(expired, d)
			longest = max(longest, timeout)
			if quiet.IsZero() || since.Before(quiet) {
				quiet = since
			}
		case next.IsZero() || deadline.Before(next):
			next = deadline
		}
	}
	if len(expired) > 0 {
		reason := fmt.Sprintf("no progress for %v", longest.Round(time.Millisecond))
		if time.Unix(0, p.lastDelegated.Load()).Before(quiet) {
			// The secondary delivered nothing at all meanwhile, to no range: it is hung, not
			// busy with its other ranges.
			expired = ds
			reason = fmt.Sprintf("the secondary delivered nothing for %v", now.Sub(quiet).Round(time.Millisecond))
			p.stalledUntil.Store(now.Add(stalledFor * longest).UnixNano())
		}
		sess.expireDelegations(p, expired, reason)
	}
	// Ranges may become eligible between checks (credit, the range before them resolved):
	// look again often enough that a deadline is seen within an eighth of it.
	wait := min(max(shortest/8, 10*time.Millisecond), sess.conf.HeartbeatInterval)
	if !next.IsZero() {
		wait = min(wait, next.Sub(now))
	}
	return max(wait, time.Millisecond)
}

// expireDelegations fails the active ones of ds, delegations of path p, for their progress
// deadline, and tells the secondary to stop writing them. Their late bytes are dropped.
func (sess *session) expireDelegations(p *path, ds []*delegationRecord, reason string) {
	stop := make(map[uint64][]uint64) // by stream
	for _, d := range ds {
		st := d.st
		st.recv.mu.Lock()
		missing, ok := d.failLocked()
		if !ok {
			st.recv.mu.Unlock()
			continue
		}
		sess.stopLocked(d)
		st.recv.mu.Unlock()
		sess.log.Debug("kwik: delegation timed out", "path", p.id, "stream", st.id, "offset", missing, "reason", reason)
		sess.reportOutcome(d, delegationFailed, missing, CodeDelegationTimeout, reason)
		stop[st.id] = append(stop[st.id], d.id)
	}
	for id, ids := range stop {
		p.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_StopSending{StopSending: &pb.StopSending{LogicalStreamId: id, DelegationIds: ids}}})
	}
}

// stoppedFor returns the range of path p failed by its deadline that holds [off, end), if
// any. s.recv.mu is held.
func (s *stream) stoppedFor(p *path, off, end uint64) *delegationRecord {
	for _, d := range s.recv.stopped {
		if d.path == p && off >= d.off && end <= d.end {
			return d
		}
	}
	return nil
}

// lateBytesLocked counts bytes received in d, a range failed by its deadline, and forgets d
// once its secondary said how much it wrote and all of it has come (the DelegationDone may
// overtake the data, which travels on other QUIC streams). d.st.recv.mu is held.
func (sess *session) lateBytesLocked(d *delegationRecord, off, end uint64) error {
	d.got.Add(off, end)
	if d.got.Len() > maxRangesPerDelegation {
		return &Error{Code: CodeOffsetMismatch, Message: "secondary's range too fragmented"}
	}
	sess.forgetStoppedLocked(d)
	return nil
}

// forgetStoppedLocked forgets d, failed by its deadline, once no more of its bytes can come.
// d.st.recv.mu is held.
func (sess *session) forgetStoppedLocked(d *delegationRecord) {
	if !d.doneKnown || !d.got.ContainsRange(d.off, d.off+d.written) {
		return
	}
	d.st.recv.stopped = without(d.st.recv.stopped, d)
	sess.clientDelegs.mu.Lock()
	delete(sess.clientDelegs.stopped, d.id)
	sess.clientDelegs.mu.Unlock()
}
