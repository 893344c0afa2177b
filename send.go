package kwik

import (
	"sync"
	"time"
)

// The send loop. Three calls put data frames on the wire: a stream's Write (at the stream's
// end), its writeAt (WriteAt's refills and Fanout's duplicates, at given offsets, even after
// Close) and a secondary's delegatedStream.Write (inside its range). They share one loop,
// sendCredit.send: per frame, under the sender's lock, it checks cancellation, the session,
// the deadline and the credit, waits (outside the lock) for a change of any of them when the
// credit is used up, and writes one frame of at most the peer's frame size outside the lock.
// What differs between the callers (where the next byte goes, what ends their range, whether
// they take turns, what they do after a failed write) is in the sendCall they pass.

// sendCredit is the state every sending side shares: the receiver's credit, the error that
// ended the side, the write deadline, and the broadcast that wakes every call waiting on
// them (Write and refilling WriteAts may wait at once). Guarded by mu, which also guards the
// fields of the struct that embeds it.
type sendCredit struct {
	mu        sync.Mutex
	maxOffset uint64    // the receiver's credit: nothing at or above it may be sent
	err       error     // canceled here, or stopped by the receiver
	deadline  time.Time // the write deadline; zero: none
	wake      chan struct{}
	waiting   int // calls waiting for credit (tests observe it)
}

// wakeLocked wakes every call waiting to send: credit, cancellation or the deadline
// changed. mu is held.
func (c *sendCredit) wakeLocked() {
	if c.wake != nil {
		close(c.wake)
	}
	c.wake = make(chan struct{})
}

// raiseLocked raises the credit to max, waking the waiting calls. mu is held.
func (c *sendCredit) raiseLocked(max uint64) {
	if max > c.maxOffset {
		c.maxOffset = max
		c.wakeLocked()
	}
}

// setDeadline sets the write deadline (SetWriteDeadline) and wakes the calls waiting, so that
// they see it.
func (c *sendCredit) setDeadline(t time.Time) {
	c.mu.Lock()
	c.deadline = t
	c.wakeLocked()
	c.mu.Unlock()
}

// sendCall is one caller's part of the loop. Every function runs with the sendCredit's mu
// held.
type sendCall struct {
	// next returns where the call's next byte goes and how many bytes it may still send
	// from there whatever the credit (the rest of its range), or an error that ends the call
	// (written after Close, range full). It runs after the common checks of the side's error.
	next func() (off, room uint64, err error)
	// blocked, if not nil, runs when the credit is used up at off: an error returned ends
	// the call instead of the wait (a failed delegation behind it that nobody else refills).
	blocked func(off uint64) error
	// take claims [off, off+n) for the call once it may send them, and returns the real
	// stream to send on; ok=false means the state moved meanwhile (turns were waited for):
	// the loop starts over.
	take func(off, n uint64) (rs *realStream, ok bool, err error)
	// order, if not nil, makes the call take turns with the other writers of the path
	// (sendOrder) before each frame.
	order *sendOrder
	// abort ends a wait for a turn; with order only.
	abort <-chan struct{}
	// failed explains a write error on the real stream.
	failed func(err error) error
	// ended runs when the call returns the side's error (c.err), before returning it.
	ended func()
}

// send writes p as frames of logical stream id, within the credit, as the call says. It
// returns how many bytes went out and, if not all, why.
func (c *sendCredit) send(sess *session, id uint64, maxFrame int, p []byte, call *sendCall) (int, error) {
	var n int
	for n < len(p) {
		c.mu.Lock()
		if err := c.err; err != nil {
			c.mu.Unlock()
			if call.ended != nil {
				call.ended()
			}
			return n, err
		}
		off, room, err := call.next()
		if err == nil && sess.ctx.Err() != nil {
			err = sess.closeErr()
		}
		if err == nil && !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
			err = errDeadline
		}
		if err != nil {
			c.mu.Unlock()
			return n, err
		}
		if c.maxOffset <= off {
			if call.blocked != nil {
				if err := call.blocked(off); err != nil {
					c.mu.Unlock()
					return n, err
				}
			}
			wake, deadline := c.wake, c.deadline
			c.waiting++
			c.mu.Unlock()
			err := sess.waitSignal(wake, deadline)
			c.mu.Lock()
			c.waiting--
			c.mu.Unlock()
			if err != nil {
				return n, err
			}
			continue
		}
		chunk := min(uint64(len(p)-n), room, c.maxOffset-off, uint64(maxFrame))
		if call.order != nil {
			deadline := c.deadline
			c.mu.Unlock()
			// The range nearest the reader goes first (sendOrder). Whatever ends the call or
			// its path while it waits ends the wait; the loop then says why.
			if !call.order.acquire(id, off, call.abort, deadline) {
				continue
			}
			c.mu.Lock()
		}
		rs, ok, err := call.take(off, chunk)
		c.mu.Unlock()
		if err != nil || !ok {
			if call.order != nil {
				call.order.release(0, 0, false)
			}
			if err != nil {
				return n, err
			}
			continue
		}
		err = rs.writeFrame(id, off, p[n:n+int(chunk)], false)
		if call.order != nil {
			// The range keeps its place if it has more to send (sendOrder).
			call.order.release(id, off+chunk, err == nil && chunk < room)
		}
		if err != nil {
			return n, call.failed(err)
		}
		n += int(chunk)
	}
	return n, nil
}

// writeError explains a failed write on a real stream of path p: the session's end, or the
// error that ended this sending side (a cancellation, the receiver's STOP_SENDING), whichever
// caused it; otherwise the write's own error.
func (c *sendCredit) writeError(p *path, err error) error {
	p.writeFailed(err)
	if p.sess.ctx.Err() != nil {
		return p.sess.closeErr()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return err
}

// waitSignal blocks until signal fires, the deadline (if not zero) passes or the session
// ends. It returns errDeadline or the session's close error.
func (sess *session) waitSignal(signal <-chan struct{}, deadline time.Time) error {
	if deadline.IsZero() {
		select {
		case <-signal:
			return nil
		case <-sess.ctx.Done():
			return sess.closeErr()
		}
	}
	d := time.Until(deadline)
	if d <= 0 {
		return errDeadline
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-signal:
		return nil
	case <-t.C:
		return errDeadline
	case <-sess.ctx.Done():
		return sess.closeErr()
	}
}
