package kwik

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
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
	// received is what the client said it had received on the path when it reported the
	// outcome (DelegationStatus.path_received and received_at_us), set before done is
	// closed; zero: not told.
	received fanoutCount
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
