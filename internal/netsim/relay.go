package netsim

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// LinkConfig describes one direction of a link. Zero values mean "no effect".
type LinkConfig struct {
	// Delay is the one-way propagation delay, added after serialisation.
	Delay time.Duration
	// Loss is the probability in [0,1] that a datagram is dropped; lost datagrams do not use the
	// link's capacity (they are dropped on arrival, as netem does).
	Loss float64
	// RateBps is the bottleneck rate in bits per second, counting 28 bytes of IP and UDP header
	// per datagram; 0 means unlimited.
	RateBps int64
	// QueueBytes bounds the drop-tail queue in front of the bottleneck (header bytes included);
	// 0 means one bandwidth-delay product at 100 ms, and at least 64 KiB. A datagram that
	// arrives while the link is idle is always accepted.
	QueueBytes int
}

// Config configures both directions of a relay.
type Config struct {
	Up   LinkConfig // client to server (towards the target)
	Down LinkConfig // server to client
	// Seed seeds the loss decisions, so a relay fed the same datagrams drops the same ones.
	Seed uint64
}

// LinkStats counts what happened to the datagrams of one direction. Every datagram received is
// eventually forwarded, dropped or failed; the difference is still in the link.
type LinkStats struct {
	Received         uint64 // datagrams read from the sending side
	Forwarded        uint64 // datagrams written to the receiving side
	ForwardedBytes   uint64 // UDP payload bytes of the forwarded datagrams
	DroppedLoss      uint64 // dropped by random loss
	DroppedQueue     uint64 // dropped because the queue, or the link's 64 MiB of buffers, was full
	DroppedBlackhole uint64 // dropped while the blackhole was on
	Failed           uint64 // not forwarded for want of a client mapping or because the write failed
}

// Stats is a snapshot of a relay's counters.
type Stats struct {
	Up, Down LinkStats // toward the server, toward the client
	Clients  int       // client mappings currently open
}

const (
	defaultMaxClients  = 1024
	defaultIdleTimeout = 2 * time.Minute
	maxDatagram        = 1<<16 - 1
	socketBufferBytes  = 4 << 20 // what quic-go asks for as well; the kernel may grant less
)

// Relay forwards UDP datagrams between clients and one target across two emulated links. See the
// package documentation.
type Relay struct {
	ln         *net.UDPConn
	target     *net.UDPAddr
	epoch      time.Time // link times are durations since epoch, on the monotonic clock
	maxClients int
	idle       time.Duration // a client mapping with no traffic either way for this long closes

	blackhole atomic.Bool
	up, down  link

	done      chan struct{} // closed by Close
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	clients struct {
		sync.Mutex
		closed bool // set by Close; no mapping is created afterwards
		m      map[netip.AddrPort]*mapping
	}
}

// mapping is one client's upstream socket, connected to the target. Its own goroutine reads the
// target's replies and feeds the down link.
type mapping struct {
	client     netip.AddrPort
	conn       *net.UDPConn
	lastActive atomic.Int64 // Relay.now() of the latest datagram either way
}

// NewRelay listens on listenAddr (such as "127.0.0.1:0") and forwards to target.
func NewRelay(listenAddr, target string, conf Config) (*Relay, error) {
	return newRelay(listenAddr, target, conf, defaultMaxClients, defaultIdleTimeout)
}

func newRelay(listenAddr, target string, conf Config, maxClients int, idle time.Duration) (*Relay, error) {
	if err := conf.validate(); err != nil {
		return nil, err
	}
	laddr, err := net.ResolveUDPAddr("udp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("netsim: listen address: %w", err)
	}
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, fmt.Errorf("netsim: target address: %w", err)
	}
	ln, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("netsim: %w", err)
	}
	setBuffers(ln)
	r := &Relay{
		ln:         ln,
		target:     taddr,
		epoch:      time.Now(),
		maxClients: maxClients,
		idle:       idle,
		done:       make(chan struct{}),
	}
	r.clients.m = make(map[netip.AddrPort]*mapping)
	r.up.init(r, conf.Up, conf.Seed, 0, func(p *packet, b []byte) error {
		_, err := p.m.conn.Write(b)
		return err
	})
	r.down.init(r, conf.Down, conf.Seed, 1, func(p *packet, b []byte) error {
		_, err := r.ln.WriteToUDPAddrPort(b, p.to)
		return err
	})
	r.wg.Add(3)
	go r.readClients()
	go r.up.run()
	go r.down.run()
	return r, nil
}

// Addr returns the address clients dial.
func (r *Relay) Addr() net.Addr { return r.ln.LocalAddr() }

// SetBlackhole drops every datagram both ways while on, including those already in the links, but
// closes nothing; turning it off revives the path.
func (r *Relay) SetBlackhole(on bool) { r.blackhole.Store(on) }

// SetConfig changes both links for the datagrams that arrive from now on; those already queued
// keep their schedule, and datagrams never overtake one another. The relay is unchanged if conf
// is invalid.
func (r *Relay) SetConfig(conf Config) error {
	if err := conf.validate(); err != nil {
		return err
	}
	r.up.setConfig(conf.Up, conf.Seed)
	r.down.setConfig(conf.Down, conf.Seed)
	return nil
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	r.clients.Lock()
	n := len(r.clients.m)
	r.clients.Unlock()
	return Stats{Up: r.up.stats.load(), Down: r.down.stats.load(), Clients: n}
}

// Close closes every socket and returns once every goroutine of the relay has ended. Datagrams
// still in the links are discarded. Further calls return the first call's result.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		close(r.done)
		r.closeErr = r.ln.Close()
		r.clients.Lock()
		r.clients.closed = true
		for _, m := range r.clients.m {
			m.conn.Close()
		}
		r.clients.Unlock()
		r.wg.Wait()
		r.up.drain()
		r.down.drain()
	})
	return r.closeErr
}

func (r *Relay) now() time.Duration { return time.Since(r.epoch) }

// stopping reports whether a read error means the goroutine should end. Other errors, such as
// ECONNREFUSED reported for a datagram sent while the target was not listening, are transient.
func (r *Relay) stopping(err error) bool {
	select {
	case <-r.done:
		return true
	default:
		return errors.Is(err, net.ErrClosed)
	}
}

// readClients reads the listening socket: the up link's entry.
func (r *Relay) readClients() {
	defer r.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := r.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			if r.stopping(err) {
				return
			}
			continue
		}
		now := r.now()
		r.up.stats.received.Add(1)
		if r.blackhole.Load() {
			r.up.stats.blackholed.Add(1)
			continue
		}
		m := r.mappingFor(from, now)
		if m == nil {
			r.up.stats.failed.Add(1)
			continue
		}
		r.up.enqueue(buf[:n], now, m, netip.AddrPort{})
	}
}

// mappingFor returns the client's mapping, opening one if there is room.
func (r *Relay) mappingFor(client netip.AddrPort, now time.Duration) *mapping {
	r.clients.Lock()
	defer r.clients.Unlock()
	if m := r.clients.m[client]; m != nil {
		m.lastActive.Store(int64(now))
		return m
	}
	if r.clients.closed || len(r.clients.m) >= r.maxClients {
		return nil
	}
	conn, err := net.DialUDP("udp", nil, r.target)
	if err != nil {
		return nil
	}
	setBuffers(conn)
	m := &mapping{client: client, conn: conn}
	m.lastActive.Store(int64(now))
	r.clients.m[client] = m
	r.wg.Add(1)
	go r.readTarget(m)
	return m
}

// readTarget reads one mapping's upstream socket, the down link's entry, until the relay closes
// or the mapping has been idle for r.idle.
func (r *Relay) readTarget(m *mapping) {
	defer r.wg.Done()
	buf := make([]byte, maxDatagram)
	m.conn.SetReadDeadline(r.epoch.Add(time.Duration(m.lastActive.Load()) + r.idle))
	for {
		n, err := m.conn.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if r.expire(m) {
					return
				}
				continue
			}
			if r.stopping(err) {
				return
			}
			continue
		}
		now := r.now()
		m.lastActive.Store(int64(now))
		r.down.stats.received.Add(1)
		if r.blackhole.Load() {
			r.down.stats.blackholed.Add(1)
			continue
		}
		r.down.enqueue(buf[:n], now, nil, m.client)
	}
}

// expire closes m if it has been idle for r.idle, and otherwise pushes its read deadline on. The
// check is made under the clients lock, which readClients holds while it marks m active, so a
// mapping is never closed just after a datagram has been queued for it.
func (r *Relay) expire(m *mapping) bool {
	r.clients.Lock()
	last := time.Duration(m.lastActive.Load())
	if r.now()-last < r.idle {
		r.clients.Unlock()
		m.conn.SetReadDeadline(r.epoch.Add(last + r.idle))
		return false
	}
	if r.clients.m[m.client] == m {
		delete(r.clients.m, m.client)
	}
	r.clients.Unlock()
	m.conn.Close()
	return true
}

func setBuffers(c *net.UDPConn) {
	// Best effort: a larger buffer only makes kernel drops less likely while a reader is
	// descheduled; the readers never wait on the links.
	_ = c.SetReadBuffer(socketBufferBytes)
	_ = c.SetWriteBuffer(socketBufferBytes)
}

func (c Config) validate() error {
	if err := c.Up.validate(); err != nil {
		return fmt.Errorf("netsim: up link: %w", err)
	}
	if err := c.Down.validate(); err != nil {
		return fmt.Errorf("netsim: down link: %w", err)
	}
	return nil
}

func (c LinkConfig) validate() error {
	switch {
	case c.Delay < 0:
		return fmt.Errorf("negative delay %v", c.Delay)
	case !(c.Loss >= 0 && c.Loss <= 1): // also rejects NaN
		return fmt.Errorf("loss %v outside [0,1]", c.Loss)
	case c.RateBps < 0:
		return fmt.Errorf("negative rate %d", c.RateBps)
	case c.QueueBytes < 0:
		return fmt.Errorf("negative queue size %d", c.QueueBytes)
	case c.Delay > math.MaxInt64/4:
		return fmt.Errorf("delay %v too long", c.Delay)
	}
	return nil
}
