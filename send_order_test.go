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
		o.release()
		if !<-want {
			t.Fatalf("turn %d refused", i)
		}
		for _, c := range []<-chan bool{low, high, other} {
			if c != want && len(c) > 0 {
				t.Fatalf("turn %d: two writers hold the turn", i)
			}
		}
	}
	o.release()
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
	o.release()
	if !<-next {
		t.Fatal("the next writer did not get the turn")
	}
	if o.acquire(0, 3, nil, time.Now().Add(10*time.Millisecond)) {
		t.Fatal("a writer got a turn held by another before its deadline")
	}
	o.release()
	if !o.acquire(0, 4, nil, time.Time{}) {
		t.Fatal("the turn was lost")
	}
}
