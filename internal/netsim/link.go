package netsim

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The pipeline of one direction, and its locking:
//
//	reader goroutine(s) ──enqueue──▶ link.state.q (FIFO, under link.state) ──run──▶ socket write
//
// The up link has one reader (readClients, on the listening socket); the down link has one per
// client mapping (readTarget). A reader stamps each datagram with the time it was read and calls
// enqueue, which never waits for anything but link.state's mutex: under it, it decides loss,
// admits the datagram to the drop-tail queue or drops it, copies it into a pooled buffer and
// computes its schedule as a router port would:
//
//	departure = max(arrival, previous departure) + (len+28 bytes)*8/rate   (serialisation)
//	delivery  = max(departure + delay, previous delivery)                 (propagation, FIFO)
//
// The queue's occupancy is not tracked per datagram: the work still ahead of the port, (previous
// departure - now) * rate, is the bytes queued, the rest of the one being serialised included.
// Loss is decided first, so lost datagrams use no capacity.
//
// One sender goroutine per link (run) pops every datagram whose delivery time has come, again
// under link.state, then writes them with the lock released, and otherwise sleeps on one reused
// timer until the head's delivery time, or on link.wake while the queue is empty. Only readers
// push and only the sender pops, so the head the sender sleeps for cannot change under it; enqueue
// signals wake only when it fills an empty queue. Counters are atomics outside the lock.
//
// Around the links: the blackhole flag is an atomic that readers check on arrival and the sender
// on delivery. The client map is guarded by Relay.clients, taken by readClients to find or open a
// mapping, by readTarget to expire its own, and by Close, which marks the relay closed under it
// (so no goroutine is started afterwards), closes every socket, and waits for every goroutine on
// Relay.wg; senders leave on Relay.done.

const (
	headerBytes   = 28 // IPv4 and UDP headers, counted towards the rate and the queue
	minQueueBytes = 64 << 10
	maxHeldBytes  = 64 << 20 // bounds a link's buffers (queued plus propagating), unlimited rate included
	maxBatch      = 64       // datagrams popped per hold of the lock
	poolBufSize   = 2048     // holds any QUIC datagram; larger ones get their own buffer
)

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, poolBufSize)
	return &b
}}

func getBuf(n int) *[]byte {
	if n > poolBufSize {
		b := make([]byte, n)
		return &b
	}
	return bufPool.Get().(*[]byte)
}

func putBuf(b *[]byte) {
	if cap(*b) == poolBufSize {
		bufPool.Put(b)
	}
}

// packet is a datagram in a link.
type packet struct {
	buf *[]byte
	n   int
	at  time.Duration  // delivery time
	m   *mapping       // up link: the client's upstream socket
	to  netip.AddrPort // down link: the client
}

// link is one direction of a relay.
type link struct {
	r     *Relay
	send  func(p *packet, b []byte) error
	wake  chan struct{} // capacity 1; signalled when a datagram enters an empty queue
	stats linkCounters

	state struct {
		sync.Mutex
		conf        LinkConfig
		seed        uint64
		stream      uint64 // seeds the loss generator with seed, so the two links differ
		queueLimit  int
		rng         *rand.Rand
		lastDepart  time.Duration
		lastDeliver time.Duration
		held        int // bytes of buffers in q
		q           fifo
	}
}

type linkCounters struct {
	received, forwarded, forwardedBytes, lost, overflowed, blackholed, failed atomic.Uint64
}

func (c *linkCounters) load() LinkStats {
	return LinkStats{
		Received:         c.received.Load(),
		Forwarded:        c.forwarded.Load(),
		ForwardedBytes:   c.forwardedBytes.Load(),
		DroppedLoss:      c.lost.Load(),
		DroppedQueue:     c.overflowed.Load(),
		DroppedBlackhole: c.blackholed.Load(),
		Failed:           c.failed.Load(),
	}
}

func (l *link) init(r *Relay, conf LinkConfig, seed, stream uint64, send func(*packet, []byte) error) {
	l.r = r
	l.send = send
	l.wake = make(chan struct{}, 1)
	l.state.stream = stream
	l.state.seed = seed
	l.state.rng = rand.New(rand.NewPCG(seed, stream))
	l.state.conf = conf
	l.state.queueLimit = queueLimit(conf)
}

func (l *link) setConfig(conf LinkConfig, seed uint64) {
	l.state.Lock()
	defer l.state.Unlock()
	l.state.conf = conf
	l.state.queueLimit = queueLimit(conf)
	if seed != l.state.seed {
		l.state.seed = seed
		l.state.rng = rand.New(rand.NewPCG(seed, l.state.stream))
	}
}

func queueLimit(c LinkConfig) int {
	if c.QueueBytes > 0 {
		return c.QueueBytes
	}
	return int(max(c.RateBps/8/10, minQueueBytes)) // 100 ms worth
}

// enqueue admits b, read at time now, to the link or drops it. It never blocks on the sender.
func (l *link) enqueue(b []byte, now time.Duration, m *mapping, to netip.AddrPort) {
	size := len(b) + headerBytes
	s := &l.state
	s.Lock()
	if s.conf.Loss > 0 && s.rng.Float64() < s.conf.Loss {
		s.Unlock()
		l.stats.lost.Add(1)
		return
	}
	if s.held+max(len(b), poolBufSize) > maxHeldBytes {
		s.Unlock()
		l.stats.overflowed.Add(1)
		return
	}
	depart := now
	if rate := s.conf.RateBps; rate > 0 {
		start := max(now, s.lastDepart)
		backlog := float64(start-now) * float64(rate) / 8e9 // bytes
		if backlog > 0 && backlog+float64(size) > float64(s.queueLimit) {
			s.Unlock()
			l.stats.overflowed.Add(1)
			return
		}
		depart = start + time.Duration(int64(size)*8e9/rate)
		s.lastDepart = depart
	}
	at := max(depart+s.conf.Delay, s.lastDeliver)
	s.lastDeliver = at
	buf := getBuf(len(b))
	copy(*buf, b)
	wasEmpty := s.q.len() == 0
	s.q.push(packet{buf: buf, n: len(b), at: at, m: m, to: to})
	s.held += cap(*buf)
	s.Unlock()
	if wasEmpty {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// run is the link's sender goroutine.
func (l *link) run() {
	defer l.r.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var batch []packet
	for {
		var wait time.Duration
		batch, wait = l.due(batch[:0])
		for i := range batch {
			l.deliver(&batch[i])
			batch[i] = packet{}
		}
		select {
		case <-l.r.done:
			return
		default:
		}
		switch {
		case len(batch) > 0:
			// Writing took time: look again before sleeping.
		case wait < 0:
			select {
			case <-l.wake:
			case <-l.r.done:
				return
			}
		default:
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-l.r.done:
				timer.Stop()
				return
			}
		}
	}
}

// due moves the datagrams whose delivery time has come to batch, and returns how long until the
// next one is due, or -1 if the queue is empty.
func (l *link) due(batch []packet) ([]packet, time.Duration) {
	s := &l.state
	s.Lock()
	defer s.Unlock()
	now := l.r.now()
	for s.q.len() > 0 {
		p := s.q.peek()
		if p.at > now {
			return batch, p.at - now
		}
		if len(batch) == maxBatch {
			return batch, 0
		}
		batch = append(batch, *p)
		s.held -= cap(*p.buf)
		s.q.pop()
	}
	return batch, -1
}

func (l *link) deliver(p *packet) {
	switch {
	case l.r.blackhole.Load():
		l.stats.blackholed.Add(1)
	case l.send(p, (*p.buf)[:p.n]) != nil:
		l.stats.failed.Add(1)
	default:
		l.stats.forwarded.Add(1)
		l.stats.forwardedBytes.Add(uint64(p.n))
	}
	putBuf(p.buf)
}

// drain releases the buffers left in the link once its goroutines have ended.
func (l *link) drain() {
	l.state.Lock()
	defer l.state.Unlock()
	for l.state.q.len() > 0 {
		putBuf(l.state.q.peek().buf)
		l.state.q.pop()
	}
	l.state.held = 0
}

// fifo is a growable ring of packets; it allocates only when it grows.
type fifo struct {
	buf  []packet // length zero or a power of two
	head int
	n    int
}

func (q *fifo) len() int { return q.n }

func (q *fifo) peek() *packet { return &q.buf[q.head] }

func (q *fifo) pop() {
	q.buf[q.head] = packet{}
	q.head = (q.head + 1) & (len(q.buf) - 1)
	q.n--
}

func (q *fifo) push(p packet) {
	if q.n == len(q.buf) {
		grown := make([]packet, max(64, 2*len(q.buf)))
		for i := range q.n {
			grown[i] = q.buf[(q.head+i)&(len(q.buf)-1)]
		}
		q.buf, q.head = grown, 0
	}
	q.buf[(q.head+q.n)&(len(q.buf)-1)] = p
	q.n++
}
