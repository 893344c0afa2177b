package kwik

import (
	"context"
	"sync"
)

// Stream IDs are numbered as in QUIC (RFC 9000, 2.1): bit 0 is the initiator (0 the client, 1
// a server), bit 1 the direction (0 bidirectional, 1 unidirectional), and id = 4*n + those
// bits, n counting the streams of that type from 0. Opening stream n of a type implicitly
// opens every lower one of that type, so either order of "first frame" and
// STREAM_CREATE_NOTIFICATION works.
const (
	dirBidi = 0
	dirUni  = 1
)

// streamDir returns dirBidi or dirUni for a stream ID.
func streamDir(id uint64) int { return int(id>>1) & 1 }

// streamKind is the state of one direction's streams: IDs, limits and the accept queue.
// Guarded by streamsMap.mu, except the signal channels.
type streamKind struct {
	// Streams this side opens.
	nextLocal uint64 // next stream number to open
	maxLocal  uint64 // the peer lets us open numbers below this
	// Streams the peer opens.
	nextRemote uint64 // numbers below this were opened
	maxRemote  uint64 // we let the peer open numbers below this
	accept     []*stream

	openSignal   chan struct{} // cap 1: maxLocal grew or session closed
	acceptSignal chan struct{} // cap 1: accept queue grew
}

// streamsMap owns the session's logical streams: ID allocation, the peer's stream limits, the
// accept queues and completion, for bidirectional and unidirectional streams alike.
type streamsMap struct {
	sess  *session
	local uint64 // the initiator bit of this side's streams

	mu       sync.Mutex
	streams  map[uint64]*stream
	kinds    [2]streamKind // by direction
	closeErr error
}

func newStreamsMap(sess *session, isClient bool, peer peerParams) *streamsMap {
	m := &streamsMap{sess: sess, streams: make(map[uint64]*stream)}
	if !isClient {
		m.local = 1
	}
	m.kinds[dirBidi].maxLocal, m.kinds[dirBidi].maxRemote = peer.maxStreams, uint64(sess.conf.MaxIncomingStreams)
	m.kinds[dirUni].maxLocal, m.kinds[dirUni].maxRemote = peer.maxUniStreams, uint64(sess.conf.MaxIncomingUniStreams)
	for i := range m.kinds {
		m.kinds[i].openSignal = make(chan struct{}, 1)
		m.kinds[i].acceptSignal = make(chan struct{}, 1)
	}
	return m
}

// streamID is the ID of stream number n of the given direction and initiator.
func streamID(n uint64, dir int, initiator uint64) uint64 {
	return 4*n + 2*uint64(dir) + initiator
}

// open opens the next local stream of direction dir, or returns ErrStreamLimit (block=false)
// / waits (block=true).
func (m *streamsMap) open(ctx context.Context, block bool, dir int) (*stream, error) {
	k := &m.kinds[dir]
	for {
		m.mu.Lock()
		if m.closeErr != nil {
			err := m.closeErr
			m.mu.Unlock()
			return nil, err
		}
		if k.nextLocal < k.maxLocal {
			id := streamID(k.nextLocal, dir, m.local)
			k.nextLocal++
			s := newStream(id, m.sess, m.sess.primary, true)
			m.streams[id] = s
			if k.nextLocal < k.maxLocal {
				notify(k.openSignal) // one MaxStreams may let several waiters through
			}
			m.mu.Unlock()
			m.sess.primary.ctrl.queueCreate(s)
			return s, nil
		}
		m.mu.Unlock()
		if !block {
			return nil, ErrStreamLimit
		}
		select {
		case <-k.openSignal:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-m.sess.ctx.Done():
			return nil, m.sess.closeErr()
		}
	}
}

// get returns the stream a frame from the peer names, opening peer streams up to it.
// It returns nil for a stream that has already finished (late frames are dropped), and a
// KWIK error for an ID the peer may not use.
func (m *streamsMap) get(id uint64) (*stream, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.streams[id]; ok {
		return s, nil
	}
	if m.closeErr != nil {
		return nil, nil
	}
	dir, n := streamDir(id), id/4
	k := &m.kinds[dir]
	if id&1 == m.local {
		if n >= k.nextLocal {
			return nil, &Error{Code: CodeInvalidFrame, Message: "frame for a stream this side never opened"}
		}
		return nil, nil
	}
	if n < k.nextRemote {
		return nil, nil
	}
	if n >= k.maxRemote {
		return nil, &Error{Code: CodeStreamCreateFailed, Message: "peer exceeded its stream limit"}
	}
	for ; k.nextRemote <= n; k.nextRemote++ {
		sid := streamID(k.nextRemote, dir, 1-m.local)
		s := newStream(sid, m.sess, m.sess.primary, false)
		m.streams[sid] = s
		k.accept = append(k.accept, s)
	}
	notify(k.acceptSignal)
	return m.streams[id], nil
}

// lookup returns an open stream without opening any: for frames from a secondary, which may
// only write into streams that exist. A stream that has finished gives nil; one that never
// existed, KWIK_OFFSET_MISMATCH.
func (m *streamsMap) lookup(id uint64) (*stream, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.streams[id]; ok {
		return s, nil
	}
	k := &m.kinds[streamDir(id)]
	next := k.nextRemote
	if id&1 == m.local {
		next = k.nextLocal
	}
	if id/4 < next {
		return nil, nil
	}
	return nil, &Error{Code: CodeOffsetMismatch, Message: "data from a secondary for a stream that does not exist"}
}

// acceptStream returns the next stream of direction dir the peer opened.
func (m *streamsMap) acceptStream(ctx context.Context, dir int) (*stream, error) {
	k := &m.kinds[dir]
	for {
		m.mu.Lock()
		if m.closeErr != nil {
			err := m.closeErr
			m.mu.Unlock()
			return nil, err
		}
		if s, ok := acceptFront(&k.accept, k.acceptSignal); ok {
			m.mu.Unlock()
			return s, nil
		}
		m.mu.Unlock()
		if err := m.sess.waitAccept(ctx, k.acceptSignal); err != nil {
			return nil, err
		}
	}
}

// acceptFront takes the first of an accept queue, and passes its signal (cap 1) on to the
// next waiter if more remain. The queue's lock is held. Logical streams (streamsMap) and a
// secondary's delegations (acceptDelegation) are accepted alike.
func acceptFront[T any](q *[]T, signal chan struct{}) (T, bool) {
	var zero T
	if len(*q) == 0 {
		return zero, false
	}
	x := (*q)[0]
	(*q)[0] = zero
	*q = (*q)[1:]
	if len(*q) > 0 {
		notify(signal)
	}
	return x, true
}

// waitAccept waits for an accept queue's signal, and fails when ctx or the session ends.
func (sess *session) waitAccept(ctx context.Context, signal <-chan struct{}) error {
	select {
	case <-signal:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-sess.ctx.Done():
		return sess.closeErr()
	}
}

// finished records that one half of s ended. When both have, the stream is forgotten and,
// if the peer opened it, the peer may open one more of its type.
func (m *streamsMap) finished(s *stream, recv, send bool) {
	m.mu.Lock()
	if recv {
		s.recvFinished = true
	}
	if send {
		s.sendFinished = true
	}
	if !s.recvFinished || !s.sendFinished {
		m.mu.Unlock()
		return
	}
	if _, ok := m.streams[s.id]; !ok {
		m.mu.Unlock()
		return
	}
	delete(m.streams, s.id)
	var grant uint64
	dir := streamDir(s.id)
	if s.id&1 != m.local && m.closeErr == nil {
		k := &m.kinds[dir]
		k.maxRemote++
		grant = k.maxRemote
	}
	m.mu.Unlock()
	if grant > 0 {
		m.sess.primary.ctrl.queueMaxStreams(grant, dir)
	}
}

// handleMaxStreams is the peer's MaxStreams for direction dir.
func (m *streamsMap) handleMaxStreams(max uint64, dir int) {
	k := &m.kinds[dir]
	m.mu.Lock()
	if max > k.maxLocal {
		k.maxLocal = max
	}
	m.mu.Unlock()
	notify(k.openSignal)
}

// closeAll ends every stream with err when the session closes.
func (m *streamsMap) closeAll(err error) {
	m.mu.Lock()
	m.closeErr = err
	streams := make([]*stream, 0, len(m.streams))
	for _, s := range m.streams {
		streams = append(streams, s)
	}
	m.mu.Unlock()
	for _, s := range streams {
		s.recv.mu.Lock()
		s.releaseRecvLocked()
		s.recv.mu.Unlock()
		s.cancelCtx(err)
	}
}
