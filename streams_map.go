package kwik

import (
	"context"
	"sync"
)

// streamsMap owns the session's logical streams: ID allocation, the peer's stream limit, the
// accept queue and completion. Stream IDs are numbered as in QUIC: the client opens even IDs,
// servers odd ones (id = 2*n + parity), and opening stream n implicitly opens every lower one
// of the same side, so either order of "first frame" and STREAM_CREATE_NOTIFICATION works.
type streamsMap struct {
	sess        *session
	localParity uint64

	mu      sync.Mutex
	streams map[uint64]*stream
	// Streams this side opens.
	nextLocal uint64 // next stream number to open
	maxLocal  uint64 // the peer lets us open numbers below this
	// Streams the peer opens.
	nextRemote uint64 // numbers below this were opened
	maxRemote  uint64 // we let the peer open numbers below this
	accept     []*stream
	closeErr   error

	openSignal   chan struct{} // cap 1: maxLocal grew or session closed
	acceptSignal chan struct{} // cap 1: accept queue grew
}

func newStreamsMap(sess *session, isClient bool, peerMaxStreams uint64) *streamsMap {
	m := &streamsMap{
		sess:         sess,
		streams:      make(map[uint64]*stream),
		maxLocal:     peerMaxStreams,
		maxRemote:    uint64(sess.conf.MaxIncomingStreams),
		openSignal:   make(chan struct{}, 1),
		acceptSignal: make(chan struct{}, 1),
	}
	if !isClient {
		m.localParity = 1
	}
	return m
}

// open opens the next local stream, or returns ErrStreamLimit (block=false) / waits (block=true).
func (m *streamsMap) open(ctx context.Context, block bool) (*stream, error) {
	for {
		m.mu.Lock()
		if m.closeErr != nil {
			err := m.closeErr
			m.mu.Unlock()
			return nil, err
		}
		if m.nextLocal < m.maxLocal {
			id := m.nextLocal*2 + m.localParity
			m.nextLocal++
			s := newStream(id, m.sess, m.sess.primary)
			m.streams[id] = s
			if m.nextLocal < m.maxLocal {
				notify(m.openSignal) // one MaxStreams may let several waiters through
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
		case <-m.openSignal:
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
	n := id / 2
	if id%2 == m.localParity {
		if n >= m.nextLocal {
			return nil, &Error{Code: CodeInvalidFrame, Message: "frame for a stream this side never opened"}
		}
		return nil, nil
	}
	if n < m.nextRemote {
		return nil, nil
	}
	if n >= m.maxRemote {
		return nil, &Error{Code: CodeStreamCreateFailed, Message: "peer exceeded its stream limit"}
	}
	for ; m.nextRemote <= n; m.nextRemote++ {
		sid := m.nextRemote*2 + (1 - m.localParity)
		s := newStream(sid, m.sess, m.sess.primary)
		m.streams[sid] = s
		m.accept = append(m.accept, s)
	}
	notify(m.acceptSignal)
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
	next := m.nextRemote
	if id%2 == m.localParity {
		next = m.nextLocal
	}
	if id/2 < next {
		return nil, nil
	}
	return nil, &Error{Code: CodeOffsetMismatch, Message: "data from a secondary for a stream that does not exist"}
}

func (m *streamsMap) acceptStream(ctx context.Context) (*stream, error) {
	for {
		m.mu.Lock()
		if m.closeErr != nil {
			err := m.closeErr
			m.mu.Unlock()
			return nil, err
		}
		if len(m.accept) > 0 {
			s := m.accept[0]
			m.accept[0] = nil
			m.accept = m.accept[1:]
			if len(m.accept) > 0 {
				notify(m.acceptSignal)
			}
			m.mu.Unlock()
			return s, nil
		}
		m.mu.Unlock()
		select {
		case <-m.acceptSignal:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-m.sess.ctx.Done():
			return nil, m.sess.closeErr()
		}
	}
}

// finished records that one half of s ended. When both have, the stream is forgotten and,
// if the peer opened it, the peer may open one more.
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
	if s.id%2 != m.localParity && m.closeErr == nil {
		m.maxRemote++
		grant = m.maxRemote
	}
	m.mu.Unlock()
	if grant > 0 {
		m.sess.primary.ctrl.queueMaxStreams(grant)
	}
}

func (m *streamsMap) handleMaxStreams(max uint64) {
	m.mu.Lock()
	if max > m.maxLocal {
		m.maxLocal = max
	}
	m.mu.Unlock()
	notify(m.openSignal)
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
