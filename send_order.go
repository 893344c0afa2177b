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
// written yet, holds nothing up. One writer sends at a time; a turn lasts one Write's chunk.
type sendOrder struct {
	mu      sync.Mutex
	busy    bool
	seq     uint64 // arrival order of waiters
	waiting []*orderWaiter
}

type orderWaiter struct {
	stream, off uint64
	seq         uint64
	ready       chan struct{} // closed when the turn is this waiter's
}

// acquire waits for the turn of the writer at off in stream, or for abort or the deadline (if
// not zero). It returns false if they came first: then the caller does not hold the turn.
func (o *sendOrder) acquire(stream, off uint64, abort <-chan struct{}, deadline time.Time) bool {
	o.mu.Lock()
	if !o.busy && len(o.waiting) == 0 {
		o.busy = true
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
		o.release()
		return false
	default:
	}
	o.waiting = without(o.waiting, w)
	o.mu.Unlock()
	return false
}

// release ends the caller's turn and hands it to the next writer.
func (o *sendOrder) release() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.waiting) == 0 {
		o.busy = false
		return
	}
	// The stream that has waited longest, and in it the lowest offset.
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
	o.waiting = without(o.waiting, next)
	close(next.ready) // busy stays set: the turn passes
}
