package netsim

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/leakcheck"
	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind: every goroutine a relay starts must
// end when it closes.
func TestMain(m *testing.M) { leakcheck.Main(m) }

// settleTimeout bounds every wait for an event; it is a deadline against hangs, not a measure.
const settleTimeout = 20 * time.Second

type datagram struct {
	b    []byte
	from netip.AddrPort
	at   time.Time
}

// peer is a UDP socket on loopback whose goroutine receives into in, and echoes if asked to.
type peer struct {
	conn  *net.UDPConn
	in    chan datagram
	count atomic.Int64
	done  chan struct{}
}

func newPeer(t testing.TB, echo bool) *peer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	setBuffers(conn)
	p := &peer{conn: conn, in: make(chan datagram, 1<<12), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			at := time.Now()
			if echo {
				conn.WriteToUDPAddrPort(buf[:n], from)
			}
			p.count.Add(1)
			select {
			case p.in <- datagram{b: bytes.Clone(buf[:n]), from: from, at: at}:
			default: // a test that ignores the contents may let in fill up
			}
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *peer) close() {
	p.conn.Close()
	<-p.done
}

func (p *peer) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *peer) send(t testing.TB, b []byte, to netip.AddrPort) {
	t.Helper()
	if _, err := p.conn.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

func (p *peer) recv(t testing.TB) datagram {
	t.Helper()
	select {
	case d := <-p.in:
		return d
	case <-time.After(settleTimeout):
		t.Fatal("timed out waiting for a datagram")
		return datagram{}
	}
}

// expectNothing checks that nothing has arrived. Callers first wait until the relay's counters
// show that nothing is left in flight, so nothing can arrive later.
func (p *peer) expectNothing(t testing.TB) {
	t.Helper()
	select {
	case d := <-p.in:
		t.Fatalf("unexpected datagram of %d bytes", len(d.b))
	default:
	}
}

func startRelay(t testing.TB, target netip.AddrPort, conf Config) *Relay {
	t.Helper()
	r, err := NewRelay("127.0.0.1:0", target.String(), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func relayAddr(r *Relay) netip.AddrPort { return r.Addr().(*net.UDPAddr).AddrPort() }

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(settleTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// settled reports whether every datagram a link has received has left it.
func settled(s LinkStats) bool {
	return s.Received == s.Forwarded+s.DroppedLoss+s.DroppedQueue+s.DroppedBlackhole+s.Failed
}

func TestForwardManyClients(t *testing.T) {
	server := newPeer(t, true)
	r := startRelay(t, server.addr(), Config{})
	const clients, perClient, window = 8, 60, 6
	sizes := []int{0, 1, 100, 1200, 1452, 2049, 9000, 65507} // 2049 and up bypass the buffer pool
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		client := newPeer(t, false)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 0))
			var sent [][]byte
			for i := range perClient {
				b := make([]byte, sizes[(c+i)%len(sizes)])
				for j := range b {
					b[j] = byte(rng.Uint32())
				}
				if _, err := client.conn.WriteToUDPAddrPort(b, relayAddr(r)); err != nil {
					errs <- err
					return
				}
				sent = append(sent, b)
				if len(sent) < window && i < perClient-1 {
					continue
				}
				for _, want := range sent { // one link per direction: order is kept
					select {
					case d := <-client.in:
						if d.from != relayAddr(r) || !bytes.Equal(d.b, want) {
							errs <- fmt.Errorf("client %d: got %d bytes from %v, want %d bytes from the relay", c, len(d.b), d.from, len(want))
							return
						}
					case <-time.After(settleTimeout):
						errs <- fmt.Errorf("client %d: timed out", c)
						return
					}
				}
				sent = sent[:0]
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A datagram can reach its client before the relay's sender has counted it.
	want := uint64(clients * perClient)
	waitFor(t, "the counters", func() bool {
		st := r.Stats()
		return st.Up.Forwarded == want && st.Down.Forwarded == want
	})
	if st := r.Stats(); st.Clients != clients {
		t.Errorf("stats %+v, want %d clients", st, clients)
	}
	sources := map[netip.AddrPort]bool{}
	for range len(server.in) {
		sources[(<-server.in).from] = true
	}
	if len(sources) != clients {
		t.Errorf("server saw %d source addresses, want one per client (%d)", len(sources), clients)
	}
}

func TestDelay(t *testing.T) {
	const up, down = 30 * time.Millisecond, 50 * time.Millisecond
	server := newPeer(t, true)
	client := newPeer(t, false)
	r := startRelay(t, server.addr(), Config{Up: LinkConfig{Delay: up}, Down: LinkConfig{Delay: down}})
	for i := range 5 {
		sent := time.Now()
		client.send(t, []byte{byte(i)}, relayAddr(r))
		atServer := server.recv(t).at
		atClient := client.recv(t).at
		if d := atServer.Sub(sent); d < up {
			t.Errorf("up one-way delay %v < %v", d, up)
		}
		if d := atClient.Sub(atServer); d < down {
			t.Errorf("down one-way delay %v < %v", d, down)
		}
		t.Logf("rtt %v (configured %v)", atClient.Sub(sent), up+down)
	}
}

func TestLoss(t *testing.T) {
	const total, window = 1000, 50
	for _, tc := range []struct {
		name     string
		up, down float64
	}{
		{"none", 0, 0},
		{"up half", 0.5, 0},
		{"down half", 0, 0.5},
		{"up all", 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := newPeer(t, true)
			client := newPeer(t, false)
			r := startRelay(t, server.addr(), Config{Up: LinkConfig{Loss: tc.up}, Down: LinkConfig{Loss: tc.down}, Seed: 42})
			payload := make([]byte, 1000)
			for sent := 0; sent < total; {
				for range window {
					client.send(t, payload, relayAddr(r))
					sent++
				}
				// Wait for the window to have gone through both links, so no socket overflows.
				waitFor(t, "the window to settle", func() bool {
					st := r.Stats()
					return st.Up.Received == uint64(sent) && settled(st.Up) &&
						uint64(server.count.Load()) == st.Up.Forwarded && st.Down.Received == st.Up.Forwarded &&
						settled(st.Down) && uint64(client.count.Load()) == st.Down.Forwarded
				})
			}
			st := r.Stats()
			checkLoss(t, "up", st.Up, total, tc.up)
			checkLoss(t, "down", st.Down, int(st.Up.Forwarded), tc.down)
		})
	}
}

// checkLoss checks that about loss*n of n datagrams were lost, with bounds no seed can miss by
// chance in practice (over six standard deviations).
func checkLoss(t *testing.T, dir string, s LinkStats, n int, loss float64) {
	t.Helper()
	if s.Received != uint64(n) || s.Forwarded+s.DroppedLoss != s.Received || s.DroppedQueue+s.DroppedBlackhole+s.Failed != 0 {
		t.Fatalf("%s: stats %+v, want %d received and only loss drops", dir, s, n)
	}
	want := loss * float64(n)
	slack := 6*math.Sqrt(float64(n)*loss*(1-loss)) + 1
	if got := float64(s.DroppedLoss); math.Abs(got-want) > slack {
		t.Errorf("%s: lost %v of %d, want %v±%.0f", dir, got, n, want, slack)
	}
}

func TestLossIsDeterministic(t *testing.T) {
	lost := func(seed uint64) uint64 {
		server := newPeer(t, false)
		client := newPeer(t, false)
		r := startRelay(t, server.addr(), Config{Up: LinkConfig{Loss: 0.3}, Seed: seed})
		for i := range 200 {
			client.send(t, []byte("x"), relayAddr(r))
			waitFor(t, "the datagram to settle", func() bool {
				st := r.Stats().Up
				return st.Received == uint64(i+1) && settled(st)
			})
		}
		st := r.Stats().Up
		if st.Received != 200 {
			t.Fatalf("received %d of 200", st.Received)
		}
		return st.DroppedLoss
	}
	if a, b := lost(7), lost(7); a != b {
		t.Errorf("same seed lost %d and %d datagrams", a, b)
	}
}

// sendBurst sends n datagrams of size bytes to the relay, pausing only for the relay to have read
// each window, so the kernel drops nothing on the way in. It returns when it started sending.
func sendBurst(t *testing.T, client *peer, r *Relay, n, size int) time.Time {
	t.Helper()
	payload := make([]byte, size)
	base := r.Stats().Up.Received
	start := time.Now()
	for sent := 0; sent < n; {
		for range min(50, n-sent) {
			client.send(t, payload, relayAddr(r))
			sent++
		}
		waitFor(t, "the relay to read the window", func() bool { return r.Stats().Up.Received-base == uint64(sent) })
	}
	return start
}

func TestRate(t *testing.T) {
	const (
		rate  = 2_000_000 // bits per second
		queue = 64 << 10
		n     = 400
		size  = 1000
	)
	server := newPeer(t, false)
	client := newPeer(t, false)
	r := startRelay(t, server.addr(), Config{Up: LinkConfig{RateBps: rate, QueueBytes: queue}})
	start := sendBurst(t, client, r, n, size)
	waitFor(t, "the queue to drain", func() bool { return settled(r.Stats().Up) })
	st := r.Stats().Up
	if st.Forwarded+st.DroppedQueue != n || st.DroppedQueue == 0 {
		t.Fatalf("stats %+v: want %d datagrams forwarded or dropped by the queue, some dropped", st, n)
	}
	// The burst arrived faster than the link drains, so about a queue's worth got through.
	if minFwd := uint64(queue / (size + headerBytes)); st.Forwarded < minFwd {
		t.Errorf("forwarded %d datagrams, want at least a queue's worth (%d)", st.Forwarded, minFwd)
	}
	waitFor(t, "the server to receive them", func() bool { return uint64(server.count.Load()) == st.Forwarded })
	var last time.Time
	for range st.Forwarded {
		last = (<-server.in).at
	}
	// The link was idle until the first datagram, so the last cannot arrive before start plus the
	// time to serialise them all: the rate can only come out lower than configured, by however
	// late the sender wakes for the last datagram.
	bits := float64(st.Forwarded * (size + headerBytes) * 8)
	got := bits / last.Sub(start).Seconds()
	t.Logf("%d of %d datagrams forwarded in %v: %.2f Mbit/s on the wire (configured %.2f)",
		st.Forwarded, n, last.Sub(start), got/1e6, rate/1e6)
	if got < 0.5*rate || got > 1.1*rate {
		t.Errorf("achieved %.0f bit/s, want within [0.5, 1.1] of %d", got, rate)
	}
}

// TestReaderNeverBlocks overloads a slow link: if the reader waited for room in the queue, it
// would take the link's time to read the burst (about 20 s, past the deadline), and the kernel,
// not the queue, would drop the excess.
func TestReaderNeverBlocks(t *testing.T) {
	const n, size = 2000, 1200
	server := newPeer(t, false)
	client := newPeer(t, false)
	r := startRelay(t, server.addr(), Config{Up: LinkConfig{RateBps: 1_000_000, QueueBytes: 16 << 10}})
	sendBurst(t, client, r, n, size)
	st := r.Stats().Up
	if st.Received != n || st.DroppedQueue < n/2 {
		t.Errorf("stats %+v: want all %d read and most dropped by the queue", st, n)
	}
	waitFor(t, "the queue to drain", func() bool { return settled(r.Stats().Up) })
	st = r.Stats().Up
	waitFor(t, "the server to receive them", func() bool { return uint64(server.count.Load()) == st.Forwarded })
}

func TestBlackhole(t *testing.T) {
	server := newPeer(t, false)
	client := newPeer(t, false)
	r := startRelay(t, server.addr(), Config{})
	client.send(t, []byte("hello"), relayAddr(r))
	mappingAddr := server.recv(t).from

	r.SetBlackhole(true)
	for range 10 {
		client.send(t, []byte("up"), relayAddr(r))
		server.send(t, []byte("down"), mappingAddr)
	}
	waitFor(t, "the drops", func() bool {
		st := r.Stats()
		return st.Up.DroppedBlackhole == 10 && st.Down.DroppedBlackhole == 10
	})
	server.expectNothing(t)
	client.expectNothing(t)

	r.SetBlackhole(false)
	client.send(t, []byte("again"), relayAddr(r))
	if d := server.recv(t); string(d.b) != "again" || d.from != mappingAddr {
		t.Fatalf("got %q from %v, want \"again\" from the same mapping %v", d.b, d.from, mappingAddr)
	}
	server.send(t, []byte("back"), mappingAddr)
	if d := client.recv(t); string(d.b) != "back" {
		t.Fatalf("got %q, want \"back\"", d.b)
	}
	waitFor(t, "the counters", func() bool {
		st := r.Stats()
		return st.Up.Forwarded == 2 && st.Down.Forwarded == 1
	})
	if st := r.Stats(); st.Clients != 1 {
		t.Errorf("stats %+v: want the mapping kept", st)
	}
}

// TestBlackholeDropsQueued turns the blackhole on while datagrams are propagating: they are lost
// too, as on a cut cable.
func TestBlackholeDropsQueued(t *testing.T) {
	server := newPeer(t, false)
	client := newPeer(t, false)
	r := startRelay(t, server.addr(), Config{Up: LinkConfig{Delay: 200 * time.Millisecond}})
	for range 5 {
		client.send(t, []byte("x"), relayAddr(r))
	}
	waitFor(t, "the relay to read them", func() bool { return r.Stats().Up.Received == 5 })
	r.SetBlackhole(true)
	waitFor(t, "the drops", func() bool { return r.Stats().Up.DroppedBlackhole == 5 })
	if st := r.Stats().Up; st.Forwarded != 0 {
		t.Fatalf("stats %+v: nothing should have been forwarded", st)
	}
	server.expectNothing(t)
}

// TestSetConfigKeepsOrder shortens the delay while datagrams propagate: later datagrams wait for
// them rather than overtake them.
func TestSetConfigKeepsOrder(t *testing.T) {
	server := newPeer(t, false)
	client := newPeer(t, false)
	r := startRelay(t, server.addr(), Config{Up: LinkConfig{Delay: 300 * time.Millisecond}})
	client.send(t, []byte("a"), relayAddr(r))
	client.send(t, []byte("b"), relayAddr(r))
	waitFor(t, "the relay to read them", func() bool { return r.Stats().Up.Received == 2 })
	if err := r.SetConfig(Config{}); err != nil {
		t.Fatal(err)
	}
	client.send(t, []byte("c"), relayAddr(r))
	for _, want := range []string{"a", "b", "c"} {
		if got := string(server.recv(t).b); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

func TestSetConfig(t *testing.T) {
	server := newPeer(t, true)
	client := newPeer(t, false)
	r := startRelay(t, server.addr(), Config{})
	ping := func() time.Duration {
		t.Helper()
		sent := time.Now()
		client.send(t, []byte("ping"), relayAddr(r))
		return client.recv(t).at.Sub(sent)
	}
	t.Logf("rtt without delay: %v", ping())

	const delay = 60 * time.Millisecond
	if err := r.SetConfig(Config{Up: LinkConfig{Delay: delay}, Down: LinkConfig{Delay: delay}}); err != nil {
		t.Fatal(err)
	}
	if rtt := ping(); rtt < 2*delay {
		t.Errorf("rtt %v < %v after SetConfig", rtt, 2*delay)
	}

	if err := r.SetConfig(Config{Down: LinkConfig{Loss: 1}}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		client.send(t, []byte("lost"), relayAddr(r))
	}
	waitFor(t, "the losses", func() bool {
		st := r.Stats()
		return st.Down.DroppedLoss == 5 && settled(st.Up) && settled(st.Down)
	})
	client.expectNothing(t)

	if err := r.SetConfig(Config{}); err != nil {
		t.Fatal(err)
	}
	ping()

	if err := r.SetConfig(Config{Up: LinkConfig{Loss: 2}}); err == nil {
		t.Error("SetConfig accepted loss 2")
	}
	ping() // an invalid config leaves the relay as it was
}

// TestTargetNotListening sends to a closed port: the ICMP errors that come back must neither stop
// the relay nor lose the mapping.
func TestTargetNotListening(t *testing.T) {
	gone := newPeer(t, false)
	target := gone.addr()
	gone.close()
	client := newPeer(t, false)
	r := startRelay(t, target, Config{})
	for i := range 5 {
		client.send(t, []byte("anyone?"), relayAddr(r))
		waitFor(t, "the datagram to settle", func() bool {
			st := r.Stats().Up
			return st.Received == uint64(i+1) && settled(st)
		})
	}
	// Nothing is asserted of the down link: another process may have taken the port meanwhile.
	if st := r.Stats(); st.Clients != 1 {
		t.Errorf("stats %+v: want the mapping kept", st)
	}
}

func TestInvalidConfig(t *testing.T) {
	for _, conf := range []Config{
		{Up: LinkConfig{Delay: -1}},
		{Down: LinkConfig{Loss: -0.1}},
		{Up: LinkConfig{Loss: 1.5}},
		{Up: LinkConfig{Loss: math.NaN()}},
		{Down: LinkConfig{RateBps: -1}},
		{Up: LinkConfig{QueueBytes: -1}},
	} {
		if r, err := NewRelay("127.0.0.1:0", "127.0.0.1:9", conf); err == nil {
			r.Close()
			t.Errorf("NewRelay accepted %+v", conf)
		}
	}
	if _, err := NewRelay("127.0.0.1:0", "no such host:x", Config{}); err == nil {
		t.Error("NewRelay accepted a bad target")
	}
}

func TestClientLimitAndExpiry(t *testing.T) {
	server := newPeer(t, true)
	r, err := newRelay("127.0.0.1:0", server.addr().String(), Config{}, 2, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	a, b, c := newPeer(t, false), newPeer(t, false), newPeer(t, false)
	for _, p := range []*peer{a, b} {
		p.send(t, []byte("hi"), relayAddr(r))
		p.recv(t)
	}
	c.send(t, []byte("one too many"), relayAddr(r))
	waitFor(t, "the refusal", func() bool { return r.Stats().Up.Failed == 1 })
	c.expectNothing(t)

	waitFor(t, "the idle mappings to expire", func() bool { return r.Stats().Clients == 0 })
	c.send(t, []byte("hi"), relayAddr(r))
	c.recv(t)
	if n := r.Stats().Clients; n != 1 {
		t.Errorf("%d clients, want 1", n)
	}
}

func TestClose(t *testing.T) {
	before := goleak.IgnoreCurrent()
	server := newPeer(t, true)
	client := newPeer(t, false)
	r, err := NewRelay("127.0.0.1:0", server.addr().String(), Config{Down: LinkConfig{Delay: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		client.send(t, []byte("stuck in the down link"), relayAddr(r))
	}
	waitFor(t, "datagrams in the down link", func() bool { return r.Stats().Down.Received == 3 })
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	r.Stats() // still answers
	client.close()
	server.close()
	goleak.VerifyNone(t, before)
}

func TestFIFO(t *testing.T) {
	var q fifo
	next, want := 0, 0
	for round := range 50 {
		for range round * 7 % 150 {
			q.push(packet{n: next})
			next++
		}
		for range round * 5 % 130 {
			if q.len() == 0 {
				break
			}
			if got := q.peek().n; got != want {
				t.Fatalf("popped %d, want %d", got, want)
			}
			q.pop()
			want++
		}
	}
	if q.len() != next-want {
		t.Fatalf("len %d, want %d", q.len(), next-want)
	}
}

func TestQueueLimit(t *testing.T) {
	for _, tc := range []struct {
		conf LinkConfig
		want int
	}{
		{LinkConfig{}, 64 << 10},
		{LinkConfig{RateBps: 1_000_000}, 64 << 10},
		{LinkConfig{RateBps: 40_000_000}, 500_000}, // 100 ms at 40 Mbit/s
		{LinkConfig{RateBps: 40_000_000, QueueBytes: 3000}, 3000},
	} {
		if got := queueLimit(tc.conf); got != tc.want {
			t.Errorf("queueLimit(%+v) = %d, want %d", tc.conf, got, tc.want)
		}
	}
}
