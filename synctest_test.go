package kwik

// Deterministic tests of what depends on time: sessions run inside a testing/synctest bubble,
// over quic-go's simulated network (testutils/simnet) instead of UDP sockets, so that the
// clock is fake (it jumps when every goroutine of the bubble is blocked), timeouts of seconds
// take no real time, and the times the tests assert are exact up to the protocol's own steps
// (a heartbeat tick, a round trip), never up to the machine's load.
//
// Writing one: call synctest.Test, and inside it newSimWorld with the one-way latency of each
// server's link (the primary first), then newSimCluster for a client, its primary and the
// secondaries. Everything is made and closed inside the bubble (t.Cleanup runs there), so
// the bubble ends with no goroutine left. Certificates are made inside the bubble too: its
// clock starts in 2000, before any certificate made outside was valid.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kwik-go/kwik/internal/selfsigned"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/testutils/simnet"
)

// darkRouter is simnet's perfect router with a switch per node that drops every packet to or
// from it (a blackholed link).
type darkRouter struct {
	simnet.PerfectRouter
	mu   sync.Mutex
	dark map[string]bool
}

func (r *darkRouter) SendPacket(p simnet.Packet) error {
	r.mu.Lock()
	drop := r.dark[p.To.String()] || r.dark[p.From.String()]
	r.mu.Unlock()
	if drop {
		return nil
	}
	return r.PerfectRouter.SendPacket(p)
}

// simWorld is an in-memory network of one client and len(lat) servers, inside a synctest
// bubble: server i listens at addrs[i] behind a link of one-way latency lat[i] each way;
// the client reaches every server from one endpoint (one quic.Transport for all its dials).
// While it lives, quicNet dials and listens on it: quicNet is package-wide, so no test that
// makes one may run in parallel with another (t.Parallel).
type simWorld struct {
	tls    tlsPair
	router *darkRouter
	addrs  []string
	lat    map[string]time.Duration // one-way, by server address
	eps    map[string]*net.UDPAddr
	trs    map[string]*quic.Transport
	client *quic.Transport
}

func newSimWorld(t *testing.T, lat ...time.Duration) *simWorld {
	t.Helper()
	server, client, err := selfsigned.New()
	if err != nil {
		t.Fatal(err)
	}
	w := &simWorld{
		tls:    tlsPair{server: server, client: client},
		router: &darkRouter{dark: make(map[string]bool)},
		lat:    make(map[string]time.Duration),
		eps:    make(map[string]*net.UDPAddr),
		trs:    make(map[string]*quic.Transport),
	}
	n := &simnet.Simnet{Router: w.router}
	var conns []*simnet.SimConn
	for i, l := range lat {
		a := &net.UDPAddr{IP: net.ParseIP(fmt.Sprintf("10.0.1.%d", i+1)), Port: 443}
		c := n.NewEndpoint(a, simnet.NodeBiDiLinkSettings{Latency: l})
		conns = append(conns, c)
		w.addrs = append(w.addrs, a.String())
		w.lat[a.String()], w.eps[a.String()], w.trs[a.String()] = l, a, &quic.Transport{Conn: c}
	}
	cc := n.NewEndpoint(&net.UDPAddr{IP: net.ParseIP("10.0.0.1"), Port: 4000}, simnet.NodeBiDiLinkSettings{
		LatencyFunc: func(p simnet.Packet) time.Duration { return w.lat[p.From.String()] },
	})
	conns = append(conns, cc)
	w.client = &quic.Transport{Conn: cc}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	saved := quicNet
	quicNet.dial = func(ctx context.Context, addr string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
		a, ok := w.eps[addr]
		if !ok {
			return nil, fmt.Errorf("simnet: no server at %s", addr)
		}
		return w.client.Dial(ctx, a, tc, qc)
	}
	quicNet.listen = func(addr string, tc *tls.Config, qc *quic.Config) (*quic.EarlyListener, func() error, error) {
		tr, ok := w.trs[addr]
		if !ok {
			return nil, nil, fmt.Errorf("simnet: no server at %s", addr)
		}
		ln, err := tr.ListenEarly(tc, qc)
		return ln, nil, err // the test closes its transports
	}
	// Registered first, so run last: after the sessions and listeners have closed.
	t.Cleanup(func() {
		quicNet = saved
		w.client.Close()
		for _, tr := range w.trs {
			tr.Close()
		}
		for _, c := range conns {
			c.Close()
		}
		n.Close()
	})
	return w
}

// setDark blackholes (or restores) the link of the server at addr.
func (w *simWorld) setDark(addr string, dark bool) {
	w.router.mu.Lock()
	w.router.dark[addr] = dark
	w.router.mu.Unlock()
}

// simQUIC is the QUIC configuration of the tests: no path MTU probes (simnet's links drop
// packets above 1400 bytes).
func simQUIC(q quic.Config) *quic.Config {
	q.DisablePathMTUDiscovery = true
	return &q
}

// newSimCluster starts, on w, a client session with the primary at w.addrs[0] and has the
// primary add the servers at w.addrs[1:] as secondaries, secondary i serving delegations as
// behaviours[i] says (serveSecondary; nil: whole), or, with fanout set, by nothing (the test
// runs ServeFanout: fanoutDownload). Its multiSource has no relays: w.setDark cuts a link.
func newSimCluster(t *testing.T, w *simWorld, clientConf, serverConf *Config, fanout bool, behaviours ...secondaryBehaviour) *multiSource {
	t.Helper()
	sconf := *serverConf
	sconf.JoinKey = testJoinKey
	ln := simListen(t, w, w.addrs[0], &sconf)
	ctx := testContext(t)
	accepted := make(chan Session, 1)
	go func() {
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- s
	}()
	c, err := Dial(ctx, w.addrs[0], w.tls.client, clientConf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	t.Cleanup(func() { s.Close() })
	ms := &multiSource{p: &pair{ln: ln, client: c.(*session), server: s.(*session)}, behaved: !fanout}
	for i, addr := range w.addrs[1:] {
		ln := simListen(t, w, addr, &sconf)
		id, sec := addPath(t, ms.p.server, ln, addr)
		if !fanout {
			var b secondaryBehaviour
			if i < len(behaviours) {
				b = behaviours[i]
			}
			serveSecondary(t, sec, b)
		}
		ms.ids, ms.secs, ms.lns = append(ms.ids, id), append(ms.secs, sec), append(ms.lns, ln)
	}
	return ms
}

// simListen listens at the address of one of w's servers.
func simListen(t *testing.T, w *simWorld, addr string, conf *Config) *Listener {
	t.Helper()
	ln, err := Listen(addr, w.tls.server, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeListener(ln) })
	return ln
}

// pathStatus is the status of path id as session s sees it.
func pathStatus(s *session, id string) PathStatus {
	for _, ps := range s.Stats().Paths {
		if ps.PathID == id {
			return ps.Status
		}
	}
	return PathStatus(-1)
}

// waitPathStatus polls (every millisecond of fake time, for at most within) until the
// session's path id has status want, and returns when it did (zero: it did not).
func waitPathStatus(s *session, id string, want PathStatus, within time.Duration) time.Time {
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if pathStatus(s, id) == want {
			return time.Now()
		}
	}
	return time.Time{}
}

// simConf is the client's and the servers' configuration in these tests.
func simConf() *Config {
	return &Config{
		StreamReceiveWindow: 2 << 20,
		HeartbeatInterval:   time.Second,
		PathTimeout:         5 * time.Second,
		PathRetry:           RetryPolicy{MaxRetries: -1},
		QUIC:                simQUIC(quic.Config{}),
	}
}

// TestSimTransfer: a plain transfer from the primary, then a Fanout of a resource over the
// primary and two secondaries, over links of 10, 25 and 40 ms each way: the bytes arrive
// intact, every secondary serves a part, and the session's handshake takes its round trips.
func TestSimTransfer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newSimWorld(t, 10*time.Millisecond, 25*time.Millisecond, 40*time.Millisecond)
		start := time.Now()
		ms := newSimCluster(t, w, simConf(), simConf(), true)
		// The QUIC handshake with the server's offer (1 RTT) and two joins (2 RTTs of their
		// secondary, plus the primary's round trips to ask and answer).
		if took := time.Since(start); took < 20*time.Millisecond+2*50*time.Millisecond+2*80*time.Millisecond {
			t.Errorf("setup took %v of fake time: fewer round trips than a handshake and two joins need", took)
		}
		t.Logf("setup: %v", time.Since(start))

		// Plain: the primary writes 1 MiB on a stream, the client reads it.
		ctx := testContext(t)
		data := content(0, 1<<20)
		start = time.Now()
		go func() {
			st, err := ms.p.server.OpenStreamSync(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := st.Write(data); err != nil {
				t.Error(err)
			}
			st.Close()
		}()
		cs, err := ms.p.client.AcceptStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(cs)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("plain transfer: %d bytes (want %d), intact %v, %v", len(got), len(data), bytes.Equal(got, data), err)
		}
		if took := time.Since(start); took < 10*time.Millisecond {
			t.Errorf("1 MiB arrived in %v, less than the link's latency", took)
		}
		t.Logf("plain 1 MiB: %v", time.Since(start))

		// Fanout: 4 MiB in 128 KiB pieces over the three servers.
		resource := content(0, 4<<20)
		start = time.Now()
		fr := fanoutDownload(t, ms, []byte("header"), resource, &FanoutOptions{ChunkSize: 128 << 10}, nil)
		if fr == nil {
			t.Fatal("Fanout failed")
		}
		checkFanoutShares(t, fr, ms, int64(len(resource)))
		for _, id := range ms.ids {
			if fr.Bytes[id] == 0 {
				t.Errorf("secondary %s served nothing: %v", id, fr.Bytes)
			}
		}
		t.Logf("fanout 4 MiB: %v, shares %v", time.Since(start), fr.Bytes)
	})
}

// TestSimPathTimeout: a secondary's link goes dark in the middle of a Fanout. The client
// declares the path dead after Config.PathTimeout of silence (checked at its heartbeat ticks,
// so within one HeartbeatInterval of it), the primary hears of it and refills what that
// secondary owed, and the resource arrives intact, once the path is dead and not before.
func TestSimPathTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lat = 10 * time.Millisecond
		w := newSimWorld(t, lat, lat, lat)
		conf, sconf := simConf(), simConf()
		// The path's death, not a progress deadline (1 s by default), fails the delegations.
		sconf.DelegationProgressTimeout = time.Minute
		ms := newSimCluster(t, w, conf, sconf, true)
		time.Sleep(3 * conf.HeartbeatInterval) // the paths have carried heartbeats
		id := ms.ids[1]
		w.setDark(w.addrs[2], true)
		dark := time.Now()
		died := make(chan time.Time, 1)
		go func() { died <- waitPathStatus(ms.p.client, id, PathDead, time.Minute) }()

		resource := content(0, 2<<20)
		fr := fanoutDownload(t, ms, nil, resource, &FanoutOptions{ChunkSize: 128 << 10}, nil)
		done := time.Now()
		at := <-died
		if at.IsZero() {
			t.Fatalf("the client's path %s is %v a minute after its link went dark", id, pathStatus(ms.p.client, id))
		}
		took := at.Sub(dark)
		t.Logf("path dead %v after the link went dark; transfer done after %v", took, done.Sub(dark))
		if took < conf.PathTimeout-conf.HeartbeatInterval || took > conf.PathTimeout+conf.HeartbeatInterval+2*lat {
			t.Errorf("path declared dead %v after its link went dark, want PathTimeout %v within a heartbeat %v", took, conf.PathTimeout, conf.HeartbeatInterval)
		}
		if done.Before(at) {
			t.Errorf("the transfer ended %v before the path was declared dead: the client's reader passed the dead secondary's range", at.Sub(done))
		}
		if fr == nil {
			t.Fatal("Fanout failed")
		}
		if fr.Refilled == 0 || len(fr.Failed) == 0 {
			t.Fatalf("nothing refilled (%d bytes) or failed (%v) though a secondary died", fr.Refilled, fr.Failed)
		}
		for _, de := range fr.Failed {
			if de.PathID != id || !errors.Is(de, ErrPathDead) {
				t.Errorf("failure %v, want ones of the dead path %s, with ErrPathDead", de, id)
			}
		}
		if st := pathStatus(ms.p.client, ms.ids[0]); st != PathActive {
			t.Errorf("the other secondary's path is %v", st)
		}
		if at := waitPathStatus(ms.p.server, id, PathDead, time.Second); at.IsZero() {
			t.Errorf("the primary has path %s %v", id, pathStatus(ms.p.server, id))
		}
	})
}

// TestSimDelegationProgressTimeout: a secondary accepts its delegation and never writes (it
// answers heartbeats: its path lives). The client fails the range after the primary's
// DelegationProgressTimeout (plus the round trips that carry the range to it and the failure
// back), with ErrDelegationTimeout; the primary refills it and the client reads everything.
func TestSimDelegationProgressTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lat = 10 * time.Millisecond
		w := newSimWorld(t, lat, 2*lat)
		sconf := simConf()
		sconf.DelegationProgressTimeout = 3 * time.Second
		hung := func(st Stream, off, n int64) error {
			<-st.Context().Done()
			return st.Context().Err()
		}
		ms := newSimCluster(t, w, simConf(), sconf, false, hung)
		ctx := testContext(t)
		const own, delegated = 64 << 10, 128 << 10
		const size = 2*own + delegated
		type result struct {
			err  error
			took time.Duration
		}
		res := make(chan result, 1)
		go func() {
			st, err := ms.p.server.OpenStreamSync(ctx)
			if err != nil {
				res <- result{err: err}
				return
			}
			if _, err := st.Write(content(0, own)); err != nil {
				res <- result{err: err}
				return
			}
			start := time.Now()
			d, err := st.Delegate(ms.ids[0], delegated, chunkRequest(own, delegated))
			if err != nil {
				res <- result{err: err}
				return
			}
			if _, err := st.Write(content(own+delegated, own)); err != nil {
				res <- result{err: err}
				return
			}
			err = d.Wait(ctx)
			r := result{err: err, took: time.Since(start)}
			var de *DelegationError
			if errors.As(err, &de) {
				if _, err := st.WriteAt(content(de.Offset, de.Remaining), de.Offset); err != nil {
					t.Errorf("WriteAt: %v", err)
				}
			}
			st.Close()
			res <- r
		}()
		cs, err := ms.p.client.AcceptStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(cs)
		if err != nil || !bytes.Equal(got, content(0, size)) {
			t.Fatalf("client read %d bytes (want %d), intact %v: %v", len(got), size, bytes.Equal(got, content(0, size)), err)
		}
		r := <-res
		var de *DelegationError
		if !errors.As(r.err, &de) || !errors.Is(r.err, ErrDelegationTimeout) || de.Offset != own || de.Remaining != delegated {
			t.Fatalf("Wait: %v, want the whole range [%d, +%d) failed with ErrDelegationTimeout", r.err, own, delegated)
		}
		t.Logf("delegation failed %v after Delegate", r.took)
		// Delegate → client: one way on the primary's link; the failure back: one more.
		if least, most := sconf.DelegationProgressTimeout+2*lat, sconf.DelegationProgressTimeout+4*lat+50*time.Millisecond; r.took < least || r.took > most {
			t.Errorf("the delegation failed %v after Delegate, want DelegationProgressTimeout %v plus the primary's round trip, in [%v, %v]", r.took, sconf.DelegationProgressTimeout, least, most)
		}
		if st := pathStatus(ms.p.client, ms.ids[0]); st != PathActive {
			t.Errorf("the hung secondary's path is %v: a hung secondary is not a dead one", st)
		}
	})
}

// TestSimIdleTimeout: a session whose application goes quiet ends with QUIC's idle timeout
// (QUIC.MaxIdleTimeout) on both sides, at that time after the last packets; with
// QUIC.KeepAlivePeriod, the client's keep-alives hold it open and usable.
func TestSimIdleTimeout(t *testing.T) {
	const idle = 10 * time.Second
	for _, keepAlive := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepalive=%v", keepAlive), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const lat = 10 * time.Millisecond
				w := newSimWorld(t, lat)
				sconf, cconf := simConf(), simConf()
				sconf.QUIC = simQUIC(quic.Config{MaxIdleTimeout: idle})
				cconf.QUIC = simQUIC(quic.Config{MaxIdleTimeout: idle})
				if keepAlive {
					cconf.QUIC.KeepAlivePeriod = idle / 3
				}
				ms := newSimCluster(t, w, cconf, sconf, false)
				c, s := ms.p.client, ms.p.server
				exchange := func() {
					t.Helper()
					ctx := testContext(t)
					st, err := c.OpenStreamSync(ctx)
					if err != nil {
						t.Fatal(err)
					}
					go func() {
						ss, err := s.AcceptStream(ctx)
						if err != nil {
							t.Error(err)
							return
						}
						b, _ := io.ReadAll(ss)
						ss.Write(b)
						ss.Close()
					}()
					st.Write([]byte("ping"))
					st.Close()
					if b, err := io.ReadAll(st); string(b) != "ping" || err != nil {
						t.Fatalf("echo: %q, %v", b, err)
					}
				}
				exchange()
				last := time.Now()
				if !keepAlive {
					for _, sess := range []*session{c, s} {
						select {
						case <-sess.Context().Done():
						case <-time.After(3 * idle):
							t.Fatalf("%v still open %v after the last exchange", sess.Role(), time.Since(last))
						}
						took := time.Since(last)
						err := context.Cause(sess.Context())
						t.Logf("%v ended %v after the last exchange: %v", sess.Role(), took, err)
						if !errors.As(err, new(*quic.IdleTimeoutError)) {
							t.Errorf("%v ended with %v, want an idle timeout", sess.Role(), err)
						}
						// The last packets (acknowledgements, credit) follow the exchange
						// within a few round trips.
						if took < idle || took > idle+100*time.Millisecond {
							t.Errorf("%v ended %v after the last exchange, want the idle timeout %v", sess.Role(), took, idle)
						}
					}
					return
				}
				time.Sleep(3 * idle)
				for _, sess := range []*session{c, s} {
					if err := context.Cause(sess.Context()); err != nil {
						t.Fatalf("%v ended despite keep-alives: %v", sess.Role(), err)
					}
				}
				exchange()
			})
		})
	}
}

// TestSimDialRoundTrips: Dial takes one round trip, as quic-go's does (the server offers the
// session in 0.5-RTT data), and the first exchange on the session one more; when the server
// asks for a client certificate, its offer waits until it has checked the certificate.
func TestSimDialRoundTrips(t *testing.T) {
	const lat = 40 * time.Millisecond
	t.Run("offer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w := newSimWorld(t, lat)
			ln := simListen(t, w, w.addrs[0], simConf())
			ctx := testContext(t)
			go func() {
				s, err := ln.Accept(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				defer s.Close()
				st, err := s.AcceptStream(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(st)
				st.Write(b)
				st.Close()
				<-s.Context().Done()
			}()
			start := time.Now()
			c, err := Dial(ctx, w.addrs[0], w.tls.client, simConf())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if took := time.Since(start); took != 2*lat {
				t.Errorf("Dial took %v of fake time, want one round trip, %v", took, 2*lat)
			}
			start = time.Now()
			st, err := c.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			st.Write([]byte("ping"))
			st.Close()
			if b, err := io.ReadAll(st); string(b) != "ping" || err != nil {
				t.Fatalf("echo: %q, %v", b, err)
			}
			if took := time.Since(start); took != 2*lat {
				t.Errorf("the first exchange took %v of fake time, want one round trip, %v", took, 2*lat)
			}
		})
	})
	t.Run("client certificate", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w := newSimWorld(t, lat)
			release := make(chan struct{})
			stc := w.tls.server.Clone()
			stc.ClientAuth = tls.RequireAnyClientCert
			stc.VerifyConnection = func(tls.ConnectionState) error {
				<-release
				return nil
			}
			ln, err := Listen(w.addrs[0], stc, simConf())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { closeListener(ln) })
			ctc := w.tls.client.Clone()
			ctc.Certificates = w.tls.server.Certificates
			dialed := make(chan error, 1)
			go func() {
				c, err := Dial(testContext(t), w.addrs[0], ctc, simConf())
				dialed <- err
				if err == nil {
					c.Close()
				}
			}()
			time.Sleep(10 * 2 * lat) // fake time: ten round trips, the server holding the certificate
			select {
			case err := <-dialed:
				t.Errorf("Dial returned (%v) before the server checked the client's certificate", err)
				dialed <- err
			default:
			}
			close(release)
			if err := <-dialed; err != nil {
				t.Fatal(err)
			}
			s, err := ln.Accept(testContext(t))
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
		})
	})
}
