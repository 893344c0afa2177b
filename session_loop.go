package kwik

// The session's control loop (as golang.org/x/net/quic's Conn loop, runOnLoop): one goroutine
// owns the path registry, session.paths (the records, byID, and the calls waiting for an
// answer: AddPath, RemovePath, the rejoins' tokens), and every change of a path's status (a
// join, a removal, a death, a rejoin, what the client reports). Every other goroutine (the
// application's API calls, the control readers, the joins and rejoins, a path's failure)
// hands it a closure and waits until the closure has run: runOnLoop. shutdown ends it.
// Nothing else reads or writes session.paths, pathRecord or path.rec, except session.start,
// which records the first path before the loop starts, and anyone reading the frozen registry
// once the loop has ended (inspect, endLoop).
//
// The closures the loop runs take no lock of the session's and never wait: they read and
// change the registry and return what their caller then acts on (queueing frames, closing
// connections, failing delegations, starting goroutines), on the caller's goroutine. A
// goroutine may thus wait on the loop whatever it holds; a control reader waits too, so that
// the frames of one control stream are handled in order and a peer's flood of path frames is
// held back by QUIC's flow control, as before. No closure calls shutdown, which waits for the
// loop's end.
//
// Data readers, streams' reads and writes and credit never touch the loop.

// controlLoop is how work reaches the session's loop goroutine (runLoop).
type controlLoop struct {
	work    chan func()   // unbuffered: a closure received is run before the next one
	closing chan struct{} // closed by shutdown: the loop marks the paths dead and ends
	done    chan struct{} // closed once the loop has ended: the registry is frozen
	cause   error         // shutdown's cause, set before closing is closed
}

func (l *controlLoop) init() {
	l.work = make(chan func())
	l.closing = make(chan struct{})
	l.done = make(chan struct{})
}

// runLoop is the session's control loop, started with the session (start) and counted in its
// WaitGroup. It ends at shutdown, having marked every live path dead.
func (s *session) runLoop() {
	defer s.wg.Done()
	defer close(s.loop.done)
	for {
		select {
		case f := <-s.loop.work:
			f()
		case <-s.loop.closing:
			for _, r := range s.paths.records {
				if r.status == PathActive || r.status == PathConnecting {
					r.setStatus(PathDead, s.loop.cause.Error())
				}
			}
			return
		}
	}
}

// runOnLoop runs f on the session's loop and returns once it has run. Once the session is
// closing, f does not run and runOnLoop returns the session's close error.
func (s *session) runOnLoop(f func()) error {
	ran := make(chan struct{})
	select {
	case s.loop.work <- func() { f(); close(ran) }:
	case <-s.loop.closing:
		return s.closeErr()
	}
	<-ran
	return nil
}

// inspect runs f, which only reads the registry, on the loop; once the session is closing, on
// the caller's goroutine when the loop has ended and the registry is frozen (a closed
// session's paths are still listed, dead).
func (s *session) inspect(f func()) {
	if s.runOnLoop(f) != nil {
		<-s.loop.done
		f()
	}
}

// endLoop (shutdown, once) ends the loop: the live paths are marked dead with cause. It
// returns every path with a connection, to close.
func (s *session) endLoop(cause error) []*path {
	s.loop.cause = cause
	close(s.loop.closing)
	<-s.loop.done
	var conns []*path
	for _, r := range s.paths.records {
		if r.p != nil {
			conns = append(conns, r.p)
		}
	}
	return conns
}

// takeWaiter removes and returns the call waiting in m (a map of session.paths) for the answer
// about pathID: how a reply finds its call.
func takeWaiter[V any](s *session, m map[string]V, pathID string) V {
	var v V
	_ = s.runOnLoop(func() {
		v = m[pathID]
		delete(m, pathID)
	})
	return v
}

// liveConns returns the connections of the active paths, or nil once the session is closing.
func (s *session) liveConns() []*path {
	var live []*path
	_ = s.runOnLoop(func() {
		for _, r := range s.paths.records {
			if r.p != nil && r.status == PathActive {
				live = append(live, r.p)
			}
		}
	})
	return live
}
