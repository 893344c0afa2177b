package kwik

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwik-go/kwik/internal/flowcontrol"
)

// sessionCredit bounds the receive credit of all a session's logical streams together
// (Config.MaxSessionReceiveWindow), as QUIC's connection-level flow control does, without a
// frame of its own: the receiver simply grants a stream more credit only while the session's
// total stays within the bound. Every stream holds up to its initial window
// (Config.initialStreamWindow) of credit on its own; credit beyond that is borrowed from the
// session's budget when the stream grows its window as the application reads, and given back
// as the reads catch up or the stream ends. A stream that wanted to borrow and found too
// little is remembered and served when credit comes back.
//
// Lock order: a stream's recv.mu, then sessionCredit.mu (every order: docs/ARCHITECTURE.md).
type sessionCredit struct {
	max uint64

	mu      sync.Mutex
	lent    uint64             // borrowed by the streams, all together
	stalled map[*stream]uint64 // streams that wanted more than was left: the least they take

	// Receive memory actually held: blocks of the streams' receive buffers, now and at most.
	blocks, peakBlocks atomic.Int64
}

// held records that a stream's receive buffer now holds delta more blocks (or fewer).
func (c *sessionCredit) held(delta int) {
	if delta == 0 {
		return
	}
	n := c.blocks.Add(int64(delta))
	for {
		peak := c.peakBlocks.Load()
		if n <= peak || c.peakBlocks.CompareAndSwap(peak, n) {
			return
		}
	}
}

// exchange takes back what s returns and lends it up to need more, if at least least is left
// (otherwise nothing, and s is remembered as stalled). It reports whether stalled streams may
// now be served.
func (c *sessionCredit) exchange(s *stream, returned, need, least uint64) (lent uint64, wake bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lent -= min(returned, c.lent)
	if need > 0 {
		left := c.max - min(c.lent, c.max)
		if g := min(need, left); g > 0 && g >= least {
			lent = g
			c.lent += g
			delete(c.stalled, s)
		} else {
			if c.stalled == nil {
				c.stalled = make(map[*stream]uint64)
			}
			c.stalled[s] = max(least, 1)
		}
	}
	return lent, c.servableLocked()
}

// servableLocked says whether what is left would serve a stalled stream: a stream with no
// credit left takes any, so flowcontrol.MinGrant free is not what to wait for. c.mu is held.
func (c *sessionCredit) servableLocked() bool {
	left := c.max - min(c.lent, c.max)
	if len(c.stalled) == 0 || left == 0 {
		return false
	}
	if left >= flowcontrol.MinGrant {
		return true
	}
	for _, least := range c.stalled {
		if least <= left {
			return true
		}
	}
	return false
}

// pressed says whether half the budget is lent.
func (c *sessionCredit) pressed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lent > c.max/2
}

// forget takes back a finished stream's loan and stops serving it.
func (c *sessionCredit) forget(s *stream, returned uint64) (wake bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lent -= min(returned, c.lent)
	delete(c.stalled, s)
	return c.servableLocked()
}

// takeStalled returns the stalled streams and forgets them: those still short re-register.
func (c *sessionCredit) takeStalled() []*stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*stream, 0, len(c.stalled))
	for s := range c.stalled {
		out = append(out, s)
	}
	clear(c.stalled)
	return out
}

// serveStalled grants credit to the streams that wanted it. It takes their recv.mu, so the
// caller holds none.
func (sess *session) serveStalled() {
	for _, s := range sess.credit.takeStalled() {
		s.serveCredit()
	}
}

// serveCredit grants a stalled stream what it wanted, if there is enough now (a stream still
// short re-registers). The stream may have ended since it was taken from the stalled ones.
func (s *stream) serveCredit() {
	s.recv.mu.Lock()
	grant, _ := s.grantLocked()
	s.recv.mu.Unlock()
	if grant > 0 {
		s.path.ctrl.queueMaxStreamData(s.id, grant)
	}
}

// loan is a stream's side of the session's budget: the flowcontrol.Budget its receiver
// borrows from.
type loan struct {
	c    *sessionCredit
	s    *stream
	wake bool // set by Exchange: stalled streams may now be served
}

func (l *loan) Exchange(returned, need, least uint64) uint64 {
	lent, wake := l.c.exchange(l.s, returned, need, least)
	l.wake = l.wake || wake
	return lent
}

func (l *loan) Pressed() bool { return l.c.pressed() }

// grantLocked settles the stream's loan with the session after reads and grants the stream
// more credit once a quarter of its window has been read, growing the window first when the
// reads went fast for the round trips of the paths delivering (flowcontrol.Receiver). It
// returns the new credit limit to announce, or 0, and whether stalled streams may now be
// served (sess.serveStalled, once s.recv.mu is released). Secondaries filling delegated
// ranges are told here; the caller tells the stream's own path. s.recv.mu is held.
func (s *stream) grantLocked() (grant uint64, wake bool) {
	if s.recv.state.ended() {
		// endRecvLocked gave the loan back: a stream that ends while serveStalled holds it
		// borrows nothing more, nor stays stalled.
		return 0, false
	}
	// (A known final size may still lie beyond the credit: delegated ranges and their refills
	// come after the primary's fin.)
	old := s.recv.fc.Limit()
	covered := s.recv.finKnown && old >= s.recv.finalSize
	s.recv.loan.wake = false
	now := time.Now()
	grant = s.recv.fc.Update(now, covered, &s.recv.loan)
	if _, end, ok := s.heldFromLocked(); ok {
		// The reader may wait for that whole block (digest.go): its credit must reach its end.
		if g := s.recv.fc.Cover(end); g > 0 {
			grant = g
		}
	}
	if grant > 0 {
		for _, d := range s.recv.delegs {
			d.path.ctrl.queueMaxStreamData(s.id, grant)
			if d.firstMissing() >= old {
				// It had no credit: its progress clock starts now.
				d.since = later(d.since, now)
			}
		}
	}
	return grant, s.recv.loan.wake
}

// endRecvLocked gives back the loan of a receive half that takes no more data, and reports
// whether stalled streams may now be served. s.recv.mu is held.
func (s *stream) endRecvLocked() (wake bool) {
	return s.sess.credit.forget(s, s.recv.fc.End())
}
