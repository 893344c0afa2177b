package kwik

import (
	"errors"
	"sync"
	"testing"
)

// The control loop runs what it is handed one closure at a time, in the order handed by one
// goroutine; once the session is closed it runs nothing more, runOnLoop returns the session's
// close error, and the frozen registry is still read (inspect): the paths are listed, dead.
func TestControlLoop(t *testing.T) {
	p := newPair(t, clientConf(), serverConf())
	s := p.client
	var (
		wg      sync.WaitGroup
		running int // only the loop touches it
		overlap bool
		order   []int
	)
	for g := range 4 {
		wg.Go(func() {
			for i := range 100 {
				if err := s.runOnLoop(func() {
					running++
					overlap = overlap || running > 1
					if g == 0 {
						order = append(order, i)
					}
					running--
				}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if overlap {
		t.Fatal("two closures ran at once")
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("closures of one goroutine ran out of order: %v", order)
		}
	}
	if err := s.CloseWithError(7, "bye"); err != nil {
		t.Fatal(err)
	}
	ran := false
	err := s.runOnLoop(func() { ran = true })
	var appErr *ApplicationError
	if ran || !errors.As(err, &appErr) || appErr.ErrorCode != 7 {
		t.Fatalf("runOnLoop after Close: ran %v, %v; want the session's close error", ran, err)
	}
	paths := s.GetAllPaths()
	if len(paths) != 1 || paths[0].Status != PathDead {
		t.Fatalf("paths of a closed session: %+v, want the primary path, dead", paths)
	}
	if err := s.pathError(paths[0].PathID); !errors.Is(err, ErrPathDead) {
		t.Fatalf("pathError after Close: %v, want KWIK_PATH_DEAD", err)
	}
}
