package kwik

import (
	"testing"
	"time"
)

// waitTurn starts a writer waiting for its turn and returns a channel that yields whether it
// got it.
func waitTurn(o *sendOrder, stream, off uint64, abort <-chan struct{}) <-chan bool {
	got := make(chan bool, 1)
	go func() { got <- o.acquire(stream, off, abort, time.Time{}) }()
	return got
}

// turned waits for the writer behind got to hear that it has the turn; it fails the test if
// the writer is refused or hears nothing within 5 s.
func turned(t *testing.T, got <-chan bool, what string) {
	t.Helper()
	select {
	case ok := <-got:
		if !ok {
			t.Fatalf("%s: refused the turn", what)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: not given the turn", what)
	}
}

// waiters reports how many writers wait, once n of them do.
func waitForWaiters(t *testing.T, o *sendOrder, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		o.mu.Lock()
		k := len(o.waiting)
		o.mu.Unlock()
		if k == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writers wait, want %d", k, n)
		}
		time.Sleep(time.Millisecond) // polls a state no event announces; bounded by the deadline
	}
}

// Within a stream the lowest offset goes first, whatever the order in which writers came; a
// stream that asked first goes before one that asked later.
func TestSendOrder(t *testing.T) {
	var o sendOrder
	if !o.acquire(0, 0, nil, time.Time{}) {
		t.Fatal("an idle order refused the turn")
	}
	high := waitTurn(&o, 4, 3<<20, nil)
	waitForWaiters(t, &o, 1)
	other := waitTurn(&o, 8, 0, nil)
	waitForWaiters(t, &o, 2)
	low := waitTurn(&o, 4, 1<<20, nil)
	waitForWaiters(t, &o, 3)

	for i, want := range []<-chan bool{low, high, other} {
		o.release(0, 0, false)
		if !<-want {
			t.Fatalf("turn %d refused", i)
		}
		for _, c := range []<-chan bool{low, high, other} {
			if c != want && len(c) > 0 {
				t.Fatalf("turn %d: two writers hold the turn", i)
			}
		}
	}
	o.release(0, 0, false)
	if o.busy || len(o.waiting) != 0 {
		t.Fatalf("the order is not idle after the last release: busy %v, %d waiting", o.busy, len(o.waiting))
	}
}

// A writer that gives up (its delegation stopped, or its deadline passed) leaves the queue and
// holds nothing; the turn goes to the next.
func TestSendOrderAbort(t *testing.T) {
	var o sendOrder
	o.acquire(0, 0, nil, time.Time{})
	abort := make(chan struct{})
	gone := waitTurn(&o, 0, 1, abort)
	waitForWaiters(t, &o, 1)
	next := waitTurn(&o, 0, 2, nil)
	waitForWaiters(t, &o, 2)
	close(abort)
	if <-gone {
		t.Fatal("an aborted writer got the turn")
	}
	o.release(0, 0, false)
	if !<-next {
		t.Fatal("the next writer did not get the turn")
	}
	if o.acquire(0, 3, nil, time.Now().Add(10*time.Millisecond)) {
		t.Fatal("a writer got a turn held by another before its deadline")
	}
	o.release(0, 0, false)
	if !o.acquire(0, 4, nil, time.Time{}) {
		t.Fatal("the turn was lost")
	}
}

// A writer whose range has more to send keeps its place between two frames: a writer further
// on in its stream, waiting, does not take every other turn (the reader waits for the lowest
// range); once the range is sent, the turn passes at once.
func TestSendOrderKeepsTheLowestRange(t *testing.T) {
	var o sendOrder
	o.acquire(4, 0, nil, time.Time{})
	high := waitTurn(&o, 4, 1<<20, nil)
	waitForWaiters(t, &o, 1)
	for off := uint64(16 << 10); off < 64<<10; off += 16 << 10 {
		o.release(4, off, true)
		if !o.acquire(4, off, nil, time.Now().Add(5*time.Second)) {
			t.Fatalf("the lowest range lost its turn at %d", off)
		}
		if len(high) > 0 {
			t.Fatalf("at %d: the range further on got a turn the lowest kept", off)
		}
	}
	o.release(4, 64<<10, false) // its last frame
	turned(t, high, "the next range, once the lowest was sent")
}

// A kept place lapses: a writer that does not come back within orderLinger (its application
// has nothing to write yet) holds the path no longer, and a waiter of another stream, which
// has waited longest, is never held for it.
func TestSendOrderKeptPlaceLapses(t *testing.T) {
	var o sendOrder
	o.acquire(4, 0, nil, time.Time{})
	high := waitTurn(&o, 4, 1<<20, nil)
	waitForWaiters(t, &o, 1)
	o.release(4, 16<<10, true) // and never comes back
	turned(t, high, "a waiter, behind a place kept by a writer that does not come back")
	// The lapsed writer comes back: it waits for the turn like any other.
	back := waitTurn(&o, 4, 16<<10, nil)
	waitForWaiters(t, &o, 1)
	other := waitTurn(&o, 8, 0, nil)
	waitForWaiters(t, &o, 2)
	o.release(4, 1<<20+16<<10, true)
	if !<-back {
		t.Fatal("the lapsed writer was refused its turn")
	}
	// Stream 8 waits, and has waited longest: the writer of stream 4 keeps no place before it.
	o.release(4, 32<<10, true)
	turned(t, other, "another stream's writer, which waited longest")
	if len(o.waiting) != 0 {
		t.Fatalf("%d writers still wait", len(o.waiting))
	}
}
