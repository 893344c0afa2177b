package kwik

import (
	"sync"
	"time"
)

// sendOrder makes the writers of a secondary's delegated ranges on one path take turns, so
// that the path's bandwidth goes to the range the client's reader needs first: among the
// writers waiting, the turn goes to the lowest offset of the logical stream that has waited
// longest (streams take turns in the order they asked; within a stream, the range nearest the
// reader goes first). Without it, every delegation outstanding on the path would advance at
// once (QUIC shares a connection's packets among its streams), each range would complete only
// when all of them do, and the reader would wait at the first gap for the whole batch.
//
// Only a writer ready to send competes: one waiting for credit, or whose application has not
// written yet, holds nothing up. One writer sends at a time; a turn lasts one frame. A writer
// whose range has more to send keeps its place for orderLinger once its turn ends: its
// application writes again within microseconds (the next buffer of an io.Copy), and a writer
// of the same stream further on, waiting, would otherwise take every other turn, so that the
// lowest range, the one the reader waits for, went at half the path's rate (traced: a
// secondary's first 64 KiB piece of eight done when it had sent 150 KiB). A writer that does
// not come back within orderLinger loses its place.
type sendOrder struct {
	mu      sync.Mutex
	busy    bool
	seq     uint64 // arrival order of waiters
	waiting []*orderWaiter
	// kept is the place of the writer whose turn ended with more of its range to send: the
	// stream and the offset it resumes at. Until it comes back, or orderLinger passes
	// (expire), waiters it comes before wait.
	kept       bool
	keptStream uint64
	keptOff    uint64
	keptUntil  time.Time   // when the kept place lapses
	expiry     *time.Timer // runs expire; made on first use
}

// orderLinger is how long a writer keeps its place between two of its frames.
const orderLinger = time.Millisecond

type orderWaiter struct {
	stream, off uint64
	seq         uint64
	ready       chan struct{} // closed when the turn is this waiter's
}

// acquire waits for the turn of the writer at off in stream, or for abort or the deadline (if
// not zero). It returns false if they came first: then the caller does not hold the turn.
func (o *sendOrder) acquire(stream, off uint64, abort <-chan struct{}, deadline time.Time) bool {
	o.mu.Lock()
	if !o.busy && (!o.kept && len(o.waiting) == 0 || o.kept && o.keptStream == stream && off <= o.keptOff) {
		o.busy = true
		o.kept = false
		o.mu.Unlock()
		return true
	}
	w := &orderWaiter{stream: stream, off: off, seq: o.seq, ready: make(chan struct{})}
	o.seq++
	o.waiting = append(o.waiting, w)
	o.mu.Unlock()
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-w.ready:
		return true
	case <-abort:
	case <-timeout:
	}
	o.mu.Lock()
	select {
	case <-w.ready:
		// Granted meanwhile: pass the turn on.
		o.mu.Unlock()
		o.release(0, 0, false)
		return false
	default:
	}
	o.waiting = without(o.waiting, w)
	o.mu.Unlock()
	return false
}

// release ends the caller's turn. more says that the caller's range has more to send, from
// next in stream: it then keeps its place (orderLinger) before the waiters it comes before.
// Otherwise the turn goes to the next writer.
func (o *sendOrder) release(stream, next uint64, more bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if more {
		if w := o.first(); w == nil || w.stream == stream && w.off > next {
			o.busy = false
			o.kept, o.keptStream, o.keptOff = true, stream, next
			o.keptUntil = time.Now().Add(orderLinger)
			if o.expiry == nil {
				o.expiry = time.AfterFunc(orderLinger, o.expire)
			} else {
				o.expiry.Reset(orderLinger)
			}
			return
		}
	}
	o.handOver()
}

// expire ends a kept place its writer did not come back to: the turn goes to the next. A
// run that finds the place still current (the timer was reset as it fired) does nothing: the
// reset runs it again.
func (o *sendOrder) expire() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.busy || !o.kept || time.Now().Before(o.keptUntil) {
		return
	}
	o.busy = true
	o.kept = false
	o.handOver()
}

// first is the waiter the turn goes to next: of the stream that has waited longest, the
// lowest offset; nil if none waits.
func (o *sendOrder) first() *orderWaiter {
	if len(o.waiting) == 0 {
		return nil
	}
	first := o.waiting[0]
	for _, w := range o.waiting[1:] {
		if w.seq < first.seq {
			first = w
		}
	}
	next := first
	for _, w := range o.waiting {
		if w.stream == first.stream && w.off < next.off {
			next = w
		}
	}
	return next
}

// handOver gives the turn, which the caller holds, to the next writer, or frees it. o.mu is
// held.
func (o *sendOrder) handOver() {
	next := o.first()
	if next == nil {
		o.busy = false
		return
	}
	o.waiting = without(o.waiting, next)
	close(next.ready) // busy stays set: the turn passes
}
