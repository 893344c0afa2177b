package kwik

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/netsim"
	"github.com/quic-go/quic-go"
)

// TestChaos runs many Fanout transfers at once (several client sessions, several concurrent
// streams each, every stream served by the primary and the secondaries it has at that moment,
// each secondary path behind its own netsim relay) while a chaos goroutine blackholes (briefly,
// or until the path dies), revives, degrades, removes and re-adds secondaries at random; the
// client may rejoin the dead ones on its own. Every transfer must end byte-exact. In
// the doomed sessions the primary's own path is blackholed, or the primary's application
// closes the session, part-way through: there every pending operation, on the client, the
// primary and the secondaries, must end with that session's error (KWIK_PATH_DEAD, or the
// application's close error), never hang.
//
// The chaos schedule is drawn from a seed, logged at the start; replay it with
// KWIK_CHAOS_SEED=<seed> or -args -chaos.seed=<seed>. (The transfers race the schedule, so a
// replay repeats the schedule, not every interleaving.)
func TestChaos(t *testing.T) {
	p := chaosParams{healthy: 3, streams: 4, events: 30, minBytes: 3 << 20, maxTransfer: 2 << 20,
		dooms: []doomMode{doomBlackhole, doomKill}}
	if testing.Short() {
		p = chaosParams{healthy: 2, streams: 3, events: 12, minBytes: 1 << 20, maxTransfer: 1 << 20}
	}
	seed := chaosSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0x6b77696b))
	if p.dooms == nil {
		p.dooms = []doomMode{doomMode(1 + rng.IntN(2))}
	}
	r := newChaosRun(t, seed, p, rng)
	r.run(rng)
}

var chaosSeedFlag = flag.Uint64("chaos.seed", 0, "seed of TestChaos's schedule; 0 picks one (so does env KWIK_CHAOS_SEED)")

func chaosSeed(t *testing.T) uint64 {
	seed := *chaosSeedFlag
	if s := os.Getenv("KWIK_CHAOS_SEED"); seed == 0 && s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KWIK_CHAOS_SEED: %v", err)
		}
		seed = v
	}
	for seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("chaos seed %d (replay: KWIK_CHAOS_SEED=%d go test -race -run Chaos .)", seed, seed)
	return seed
}

type chaosParams struct {
	healthy     int        // sessions whose every transfer must complete
	streams     int        // concurrent streams (client workers) per session
	events      int        // chaos events, dooms included
	minBytes    int64      // each healthy worker transfers at least this much
	maxTransfer int64      // largest single transfer
	dooms       []doomMode // one doomed session each
}

// doomMode is how a doomed session's primary goes.
type doomMode int

const (
	doomNone      doomMode = iota
	doomBlackhole          // the primary's path falls silent: QUIC's idle timeout, KWIK_PATH_DEAD on the secondaries
	doomKill               // the primary's application closes the session with chaosKillCode
)

func (d doomMode) String() string {
	return [...]string{"healthy", "primary blackholed", "primary killed"}[d]
}

const chaosKillCode ApplicationErrorCode = 0x6b11

// chaosDeadline bounds every wait of the test: it detects hangs and measures nothing.
const chaosDeadline = 15 * time.Second

const chaosResourceSize = 8 << 20

// chaosConf is the configuration of every side. Paths die after 2 s of silence: short enough
// for the chaos to kill some, and with room for a loaded machine (2 cores, -race, other tests
// beside), where a healthy primary path's heartbeats were seen to lag by 0.7 s.
//
// A primary path is not watched by KWIK: the doomed session whose primary is blackholed ends
// with QUIC's idle timeout, 5 s here (quic-go's least for a peer's) rather than the default 30 s.
func chaosConf(server bool) *Config {
	c := &Config{HeartbeatInterval: 200 * time.Millisecond, PathTimeout: 2 * time.Second, QUIC: &quic.Config{MaxIdleTimeout: 5 * time.Second}}
	if server {
		c.JoinKey = testJoinKey
	}
	return c
}

type chaosRun struct {
	t        *testing.T
	seed     uint64
	p        chaosParams
	ctx      context.Context
	resource []byte
	start    time.Time
	stop     chan struct{} // closed when the schedule is over: healthy workers wind down
	wg       sync.WaitGroup

	primaryLn *Listener
	secLns    []*Listener
	sessions  []*chaosSession

	mu     sync.Mutex
	secs   map[string][]*chaosSecondary // by session ID
	log    []string                     // the schedule as it happened
	counts map[string]int               // events by kind
}

// chaosSecondary is one secondary session, as its server accepted it.
type chaosSecondary struct {
	sess   *session
	served chan error // what ServeFanout returned
}

type chaosSession struct {
	name            string
	doom            doomMode
	doomed          bool // the doom event has happened (chaos goroutine only)
	client, primary *session
	primaryRelay    *netsim.Relay // doomed sessions only
	slots           []*chaosSlot

	workers   sync.WaitGroup
	handlers  sync.WaitGroup // the primary's stream handlers
	acceptErr chan error     // how the primary's accept loop ended

	mu          sync.Mutex
	workerErrs  []error
	handlerErrs []error
	pending     map[string]error // doomed: operations pending at the doom, by name
	pendingWG   sync.WaitGroup
	bytes       int64 // delivered byte-exact to the client
	transfers   int
	delegated   int64 // of which secondaries delivered
	refilled    int64
	failures    int // delegations that failed
}

// chaosSlot is one secondary of one session: a relay in front of a secondary server, and the
// latest path through it.
type chaosSlot struct {
	cs         *chaosSession
	name       string
	relay      *netsim.Relay
	id         string
	blackholed bool
	reviveAt   time.Time // when a blackhole ends
}

func newChaosRun(t *testing.T, seed uint64, p chaosParams, rng *rand.Rand) *chaosRun {
	r := &chaosRun{t: t, seed: seed, p: p, ctx: testContext(t), resource: content(0, chaosResourceSize),
		stop: make(chan struct{}), secs: map[string][]*chaosSecondary{}, counts: map[string]int{}}
	// Registered first, so it runs last: every goroutine of the test has ended before the
	// leak check in TestMain.
	t.Cleanup(func() {
		if !r.await("the test's goroutines after closing", &r.wg) {
			r.dumpGoroutines()
		}
	})
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, l := range r.secs {
			for _, sec := range l {
				sec.sess.Close()
			}
		}
	})
	r.primaryLn = listen(t, chaosConf(true))
	for range 3 {
		ln := listen(t, chaosConf(true))
		r.secLns = append(r.secLns, ln)
		r.wg.Add(1)
		go r.secondaryServer(ln)
	}
	names := 0
	add := func(doom doomMode) {
		cs := &chaosSession{name: fmt.Sprintf("s%d", names), doom: doom, acceptErr: make(chan error, 1), pending: map[string]error{}}
		names++
		r.dial(cs)
		for j := range 2 + rng.IntN(2) {
			sl := &chaosSlot{cs: cs, name: fmt.Sprintf("%s/sec%d", cs.name, j), relay: relay(t, r.secLns[j], netsim.Config{})}
			cs.slots = append(cs.slots, sl)
			r.add(sl)
		}
		r.sessions = append(r.sessions, cs)
	}
	for range p.healthy {
		add(doomNone)
	}
	for _, d := range p.dooms {
		add(d)
	}
	return r
}

// dial opens cs's session on the primary: through a relay for a doomed session, whose
// primary path the chaos will cut.
func (r *chaosRun) dial(cs *chaosSession) {
	t := r.t
	addr := r.primaryLn.Addr().String()
	if cs.doom != doomNone {
		cs.primaryRelay = relay(t, r.primaryLn, netsim.Config{})
		addr = cs.primaryRelay.Addr().String()
	}
	c, err := Dial(r.ctx, addr, testTLS.client, chaosConf(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := r.primaryLn.Accept(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.ID() != c.ID() {
		t.Fatalf("accepted session %s after dialing %s", s.ID(), c.ID())
	}
	cs.client, cs.primary = c.(*session), s.(*session)
}

// secondaryServer accepts sessions on ln and serves each with ServeFanout, as a secondary
// server would, until ln closes.
func (r *chaosRun) secondaryServer(ln *Listener) {
	defer r.wg.Done()
	for {
		s, err := ln.Accept(r.ctx)
		if err != nil {
			return
		}
		sec := &chaosSecondary{sess: s.(*session), served: make(chan error, 1)}
		r.mu.Lock()
		r.secs[s.ID()] = append(r.secs[s.ID()], sec)
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			sec.served <- ServeFanout(r.ctx, s, bytes.NewReader(r.resource))
		}()
	}
}

// add has the primary add the secondary behind sl, and notes the new path.
func (r *chaosRun) add(sl *chaosSlot) {
	addr := sl.relay.Addr().String()
	if err := sl.cs.primary.AddPath(addr); err != nil {
		r.t.Errorf("seed %d: %s: AddPath(%s): %v", r.seed, sl.name, addr, err)
		return
	}
	infos := sl.cs.primary.GetAllPaths()
	for i := len(infos) - 1; i >= 0; i-- {
		if infos[i].Address == addr {
			sl.id = infos[i].PathID
			return
		}
	}
	r.t.Errorf("seed %d: %s: the added path is not listed", r.seed, sl.name)
}

// status is the primary's view of sl's latest path; PathRemoved if it never had one.
func (sl *chaosSlot) status() PathStatus {
	if pi, ok := pathByID(sl.cs.primary.GetAllPaths(), sl.id); ok {
		return pi.Status
	}
	return PathRemoved
}

func (r *chaosRun) note(kind, format string, args ...any) {
	r.mu.Lock()
	r.counts[kind]++
	r.log = append(r.log, fmt.Sprintf("%6.2fs %-10s %s", time.Since(r.start).Seconds(), kind, fmt.Sprintf(format, args...)))
	r.mu.Unlock()
}

func (r *chaosRun) run(rng *rand.Rand) {
	t := r.t
	r.start = time.Now()
	for k, cs := range r.sessions {
		r.wg.Add(1)
		go r.acceptLoop(cs)
		for w := range r.p.streams {
			cs.workers.Add(1)
			r.wg.Add(1)
			wrng := rand.New(rand.NewPCG(r.seed, uint64(1000*(k+1)+w)))
			go func() {
				defer r.wg.Done()
				defer cs.workers.Done()
				err := r.worker(cs, wrng)
				cs.mu.Lock()
				cs.workerErrs = append(cs.workerErrs, err)
				cs.mu.Unlock()
			}()
		}
	}
	r.chaos(rng)

	var delegated, refilled, total int64
	var failures int
	for _, cs := range r.sessions {
		if cs.doom == doomNone {
			r.checkHealthy(cs)
		} else {
			r.checkDoomed(cs)
		}
	}
	r.finish()
	for _, cs := range r.sessions {
		cs.mu.Lock()
		t.Logf("%s (%v): %d transfers, %d MiB byte-exact; secondaries delivered %d MiB, %d delegations failed, %d KiB refilled",
			cs.name, cs.doom, cs.transfers, cs.bytes>>20, cs.delegated>>20, cs.failures, cs.refilled>>10)
		delegated, refilled, failures, total = delegated+cs.delegated, refilled+cs.refilled, failures+cs.failures, total+cs.bytes
		cs.mu.Unlock()
	}
	r.mu.Lock()
	t.Logf("schedule:\n%s", strings.Join(r.log, "\n"))
	t.Logf("%d events %v; %d MiB delivered in %v, %d MiB by secondaries, %d delegations failed, %d KiB refilled",
		len(r.log), r.counts, total>>20, time.Since(r.start).Round(time.Millisecond), delegated>>20, failures, refilled>>10)
	r.mu.Unlock()
	if delegated == 0 {
		t.Errorf("seed %d: the secondaries delivered nothing: the chaos had nothing to break", r.seed)
	}
}

// acceptLoop serves every stream the client opens with Fanout.
func (r *chaosRun) acceptLoop(cs *chaosSession) {
	defer r.wg.Done()
	for {
		st, err := cs.primary.AcceptStream(r.ctx)
		if err != nil {
			cs.acceptErr <- err
			return
		}
		cs.handlers.Add(1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer cs.handlers.Done()
			err := r.handle(cs, st)
			if err != nil {
				// The client must hear of it rather than wait for bytes that never come.
				st.CancelWrite(1)
			}
			cs.mu.Lock()
			cs.handlerErrs = append(cs.handlerErrs, err)
			cs.mu.Unlock()
		}()
	}
}

// chaosRequest is what a client worker asks for: size bytes of the resource from base, served
// with Fanout in chunks of chunk bytes (0: Fanout's choice), inFlight per secondary.
type chaosRequest struct {
	base, size, chunk int64
	inFlight          int
}

func (q chaosRequest) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(q.base))
	b = binary.BigEndian.AppendUint64(b, uint64(q.size))
	b = binary.BigEndian.AppendUint64(b, uint64(q.chunk))
	return binary.BigEndian.AppendUint64(b, uint64(q.inFlight))
}

func parseChaosRequest(b []byte) (chaosRequest, error) {
	if len(b) != 32 {
		return chaosRequest{}, fmt.Errorf("request of %d bytes", len(b))
	}
	u := func(i int) int64 { return int64(binary.BigEndian.Uint64(b[8*i:])) }
	q := chaosRequest{base: u(0), size: u(1), chunk: u(2), inFlight: int(u(3))}
	if q.base < 0 || q.size <= 0 || q.base+q.size > chaosResourceSize {
		return q, fmt.Errorf("request [%d, +%d) outside the resource", q.base, q.size)
	}
	return q, nil
}

// handle serves one stream on the primary: the request, then Fanout over the secondaries that
// are active now.
func (r *chaosRun) handle(cs *chaosSession, st Stream) error {
	req, err := io.ReadAll(io.LimitReader(st, 64))
	if err != nil {
		return err
	}
	q, err := parseChaosRequest(req)
	if err != nil {
		r.t.Errorf("seed %d: %s: %v", r.seed, cs.name, err)
		return err
	}
	var paths []string
	for _, pi := range cs.primary.GetActivePaths() {
		if !pi.IsPrimary {
			paths = append(paths, pi.PathID)
		}
	}
	fr, err := Fanout(r.ctx, st, io.NewSectionReader(bytes.NewReader(r.resource), q.base, q.size), q.size, paths, &FanoutOptions{
		ChunkSize:   q.chunk,
		MaxInFlight: q.inFlight,
		Request:     func(off, n int64) []byte { return FanoutRequest(q.base+off, n) },
	})
	if fr != nil {
		cs.mu.Lock()
		for id, n := range fr.Bytes {
			if id != "" {
				cs.delegated += n
			}
		}
		cs.refilled += fr.Refilled
		cs.failures += len(fr.Failed)
		cs.mu.Unlock()
	}
	return err
}

var errChaosCorrupt = errors.New("transfer corrupted")

// worker runs transfers one after the other: a healthy session's until the schedule is over
// and it has moved minBytes, a doomed session's until its first error.
func (r *chaosRun) worker(cs *chaosSession, rng *rand.Rand) error {
	var done int64
	for {
		if cs.doom == doomNone && done >= r.p.minBytes {
			select {
			case <-r.stop:
				return nil
			default:
			}
		}
		q := chaosRequest{size: 1 + rng.Int64N(64<<10)}
		if rng.IntN(8) != 0 {
			q.size = 256<<10 + rng.Int64N(r.p.maxTransfer-256<<10+1)
		}
		q.base = rng.Int64N(chaosResourceSize - q.size + 1)
		if rng.IntN(2) == 0 {
			q.chunk = int64(16<<10 + rng.IntN(256<<10))
		}
		q.inFlight = 1 + rng.IntN(6)
		if err := r.transfer(cs, q); err != nil {
			return err
		}
		done += q.size
	}
}

// transfer asks for q on a new stream and checks every byte it reads, including those read
// before a failure.
func (r *chaosRun) transfer(cs *chaosSession, q chaosRequest) error {
	st, err := cs.client.OpenStreamSync(r.ctx)
	if err != nil {
		return err
	}
	if _, err := st.Write(q.encode()); err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	got, err := io.ReadAll(st)
	want := r.resource[q.base : q.base+q.size]
	if len(got) > len(want) || !bytes.Equal(got, want[:len(got)]) || (err == nil && len(got) != len(want)) {
		first := 0
		for first < min(len(got), len(want)) && got[first] == want[first] {
			first++
		}
		r.t.Errorf("seed %d: %s stream %d: [%d, +%d) in chunks of %d: got %d bytes (then %v), first wrong byte at %d",
			r.seed, cs.name, st.StreamID(), q.base, q.size, q.chunk, len(got), err, first)
		return errChaosCorrupt
	}
	if err != nil {
		return err
	}
	cs.mu.Lock()
	cs.bytes += q.size
	cs.transfers++
	cs.mu.Unlock()
	return nil
}

// chaos runs the schedule: p.events events at random intervals, each a doom (at its drawn
// turn) or a random blow to a secondary of a session not yet doomed. It then revives every
// relay and lets the workers wind down.
func (r *chaosRun) chaos(rng *rand.Rand) {
	doomAt := map[int]*chaosSession{}
	for _, cs := range r.sessions {
		if cs.doom == doomNone {
			continue
		}
		for {
			// Not the first events, so that transfers are in flight; not the last, so that
			// the chaos goes on around the doomed session.
			ev := 2 + rng.IntN(max(r.p.events-5, 1))
			if doomAt[ev] == nil {
				doomAt[ev] = cs
				break
			}
		}
	}
	for ev := range r.p.events {
		select {
		case <-time.After(time.Duration(50+rng.IntN(300)) * time.Millisecond):
		case <-r.ctx.Done():
			return
		}
		if cs := doomAt[ev]; cs != nil {
			r.doom(cs)
			continue
		}
		if sl := r.dueRevival(); sl != nil {
			r.revive(sl)
			continue
		}
		r.blow(rng)
	}
	for _, cs := range r.sessions {
		for _, sl := range cs.slots {
			if sl.blackholed && !cs.doomed {
				r.revive(sl)
			}
		}
	}
	close(r.stop)
}

// dueRevival returns the blackholed slot whose outage is the most overdue, if any is.
func (r *chaosRun) dueRevival() *chaosSlot {
	var due *chaosSlot
	for _, cs := range r.sessions {
		for _, sl := range cs.slots {
			if sl.blackholed && !cs.doomed && time.Now().After(sl.reviveAt) && (due == nil || sl.reviveAt.Before(due.reviveAt)) {
				due = sl
			}
		}
	}
	return due
}

func (r *chaosRun) revive(sl *chaosSlot) {
	sl.relay.SetBlackhole(false)
	sl.blackholed = false
	r.note("revive", "%s (path %s, %v)", sl.name, sl.id, sl.status())
}

// blow does one random thing to one secondary: each slot offers what makes sense in its state.
func (r *chaosRun) blow(rng *rand.Rand) {
	type option struct {
		kind string
		sl   *chaosSlot
	}
	var opts []option
	offer := func(kind string, sl *chaosSlot, weight int) {
		for range weight {
			opts = append(opts, option{kind, sl})
		}
	}
	for _, cs := range r.sessions {
		if cs.doomed {
			continue
		}
		for _, sl := range cs.slots {
			st := sl.status()
			live := st == PathActive || st == PathConnecting
			switch {
			case sl.blackholed:
			case live:
				offer("blackhole", sl, 3)
			default:
				offer("add", sl, 3)
			}
			if st == PathActive {
				offer("remove", sl, 1)
			}
			offer("degrade", sl, 1)
		}
	}
	o := opts[rng.IntN(len(opts))]
	sl := o.sl
	switch o.kind {
	case "blackhole":
		// A hiccup the path survives, or an outage past PathTimeout that kills it.
		conf := chaosConf(false)
		d := time.Duration(100+rng.IntN(int(conf.PathTimeout/2/time.Millisecond)-100)) * time.Millisecond
		if rng.IntN(2) == 0 {
			d = conf.PathTimeout + conf.HeartbeatInterval + time.Duration(200+rng.IntN(1300))*time.Millisecond
		}
		sl.relay.SetBlackhole(true)
		sl.blackholed, sl.reviveAt = true, time.Now().Add(d)
		r.note(o.kind, "%s (path %s) for %v", sl.name, sl.id, d)
	case "remove":
		err := sl.cs.primary.RemovePath(sl.id)
		r.note(o.kind, "%s (path %s): %v", sl.name, sl.id, err)
		// The path may have died since it was looked at: that is the only acceptable failure.
		if err != nil && !errors.Is(err, ErrPathDead) {
			r.t.Errorf("seed %d: %s: RemovePath(%s): %v", r.seed, sl.name, sl.id, err)
		}
	case "add":
		old, was := sl.id, sl.status()
		if was == PathDead {
			// Forget the dead path first, lest the client rejoin it beside the new one.
			if err := sl.cs.primary.RemovePath(sl.id); err != nil {
				r.t.Errorf("seed %d: %s: RemovePath(%s) of a dead path: %v", r.seed, sl.name, sl.id, err)
			}
		}
		r.add(sl)
		r.note(o.kind, "%s (path %s; was %s, %v)", sl.name, sl.id, old, was)
	case "degrade":
		var c netsim.Config
		if rng.IntN(2) == 0 {
			l := netsim.LinkConfig{Delay: time.Duration(rng.IntN(5000)) * time.Microsecond, Loss: rng.Float64() * 0.01}
			c = netsim.Config{Up: l, Down: l, Seed: rng.Uint64()}
		}
		if err := sl.relay.SetConfig(c); err != nil {
			r.t.Fatal(err)
		}
		r.note(o.kind, "%s: delay %v, loss %.2f%%", sl.name, c.Up.Delay, 100*c.Up.Loss)
	}
}

// doom cuts cs's primary off, after starting operations that can only end with the session.
func (r *chaosRun) doom(cs *chaosSession) {
	cs.doomed = true
	pend := func(name string, op func() error) {
		cs.pendingWG.Add(1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer cs.pendingWG.Done()
			err := op()
			cs.mu.Lock()
			cs.pending[name] = err
			cs.mu.Unlock()
		}()
	}
	pend("client AcceptStream", func() error { _, err := cs.client.AcceptStream(r.ctx); return err })
	switch cs.doom {
	case doomBlackhole:
		cs.primaryRelay.SetBlackhole(true)
		// Nobody will answer these: the request never reaches the client.
		pend("primary AddPath", func() error { return cs.primary.AddPath("127.0.0.1:9") })
		for _, sl := range cs.slots {
			if sl.status() == PathActive {
				pend("primary RemovePath", func() error { return cs.primary.RemovePath(sl.id) })
				break
			}
		}
	case doomKill:
		// The client tries to join a port where nobody answers, for HandshakeTimeout.
		pend("primary AddPath", func() error { return cs.primary.AddPath("127.0.0.1:9") })
		pend("primary CloseWithError", func() error { return cs.primary.CloseWithError(chaosKillCode, "chaos: primary killed") })
	}
	r.note("doom", "%s: %v", cs.name, cs.doom)
}

// checkHealthy waits for cs's transfers to end: all byte-exact, every Fanout successful, the
// session still open.
func (r *chaosRun) checkHealthy(cs *chaosSession) {
	t := r.t
	r.await(cs.name+" client workers", &cs.workers)
	r.await(cs.name+" primary handlers", &cs.handlers)
	cs.mu.Lock()
	for _, err := range cs.workerErrs {
		if err != nil && err != errChaosCorrupt {
			t.Errorf("seed %d: %s: transfer failed: %v", r.seed, cs.name, err)
		}
	}
	for _, err := range cs.handlerErrs {
		if err != nil {
			t.Errorf("seed %d: %s: Fanout: %v", r.seed, cs.name, err)
		}
	}
	cs.mu.Unlock()
	if err := cs.client.Context().Err(); err != nil {
		t.Errorf("seed %d: %s: session ended: %v", r.seed, cs.name, context.Cause(cs.client.Context()))
	}
}

// finish closes the healthy sessions from the client, as an application would, and checks
// that every secondary session of the run ends, none left behind by a path that died or was
// removed unnoticed: each ends with its path (dead or removed) or with the client's close.
func (r *chaosRun) finish() {
	var closing sync.WaitGroup
	for _, cs := range r.sessions {
		if cs.doom == doomNone {
			closing.Add(1)
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				defer closing.Done()
				cs.client.Close()
			}()
		}
	}
	if !r.await("closing the clients", &closing) {
		return
	}
	for _, cs := range r.sessions {
		if cs.doom != doomNone {
			continue
		}
		select {
		case <-cs.primary.Context().Done():
			r.wantErr(cs.name+" primary session", context.Cause(cs.primary.Context()), func(err error) bool { return isAppClose(err, 0, true) })
		case <-time.After(chaosDeadline):
			r.t.Errorf("seed %d: %s: the primary session still open after the client closed", r.seed, cs.name)
		}
	}
	r.mu.Lock()
	var secs []*chaosSecondary
	for _, l := range r.secs {
		secs = append(secs, l...)
	}
	r.mu.Unlock()
	// A secondary cut off ends with its own QUIC idle timeout: the client's close cannot reach it.
	ended := func(err error) bool { return isPathEnd(err) || isAppClose(err, 0, true) || isIdleTimeout(err) }
	for _, sec := range secs {
		name := fmt.Sprintf("secondary of session %s on path %s", sec.sess.ID(), sec.sess.primary.id)
		if _, ok := r.awaitErr(name, sec.served); ok {
			r.wantErr(name, context.Cause(sec.sess.Context()), ended)
		}
	}
}

// checkDoomed waits for every operation of cs to end and checks that each ended with the
// doom's error (or, for a transfer, byte-exact before it).
func (r *chaosRun) checkDoomed(cs *chaosSession) {
	r.await(cs.name+" client workers", &cs.workers)
	r.await(cs.name+" primary handlers", &cs.handlers)
	r.await(cs.name+" pending operations", &cs.pendingWG)
	clientErr, primaryErr := isIdleTimeout, isIdleTimeout
	secondaryErr := func(err error) bool { return isPathEnd(err) || isIdleTimeout(err) }
	if cs.doom == doomKill {
		clientErr, primaryErr = isKill(true), isKill(false)
		secondaryErr = func(err error) bool { return isPathEnd(err) || isAppClose(err, 0, true) || isIdleTimeout(err) }
	}
	if err, ok := r.awaitErr(cs.name+" primary AcceptStream", cs.acceptErr); ok {
		r.wantErr(cs.name+" primary AcceptStream", err, primaryErr)
	}
	for name, s := range map[string]*session{"client": cs.client, "primary": cs.primary} {
		select {
		case <-s.Context().Done():
		case <-time.After(chaosDeadline):
			r.t.Errorf("seed %d: %s: %s session still open", r.seed, cs.name, name)
			continue
		}
	}
	r.wantErr(cs.name+" client session", context.Cause(cs.client.Context()), clientErr)
	r.wantErr(cs.name+" primary session", context.Cause(cs.primary.Context()), primaryErr)
	cs.mu.Lock()
	for _, err := range cs.workerErrs {
		if err != errChaosCorrupt {
			r.wantErr(cs.name+" client transfer", err, clientErr)
		}
	}
	for _, err := range cs.handlerErrs {
		if err != nil { // a Fanout may have finished before the doom
			r.wantErr(cs.name+" primary Fanout", err, primaryErr)
		}
	}
	for name, err := range cs.pending {
		want := primaryErr
		if strings.HasPrefix(name, "client") {
			want = clientErr
		}
		if name == "primary CloseWithError" {
			want = func(err error) bool { return err == nil }
		}
		r.wantErr(cs.name+" "+name, err, want)
	}
	cs.mu.Unlock()
	r.mu.Lock()
	secs := r.secs[cs.client.ID()]
	r.mu.Unlock()
	for i, sec := range secs {
		name := fmt.Sprintf("%s secondary %d", cs.name, i)
		if err, ok := r.awaitErr(name+" ServeFanout", sec.served); ok {
			r.wantErr(name+" ServeFanout", err, secondaryErr)
			r.wantErr(name+" session", context.Cause(sec.sess.Context()), secondaryErr)
		}
	}
}

func isIdleTimeout(err error) bool {
	var idle *quic.IdleTimeoutError
	return errors.As(err, &idle)
}

// isPathEnd: a secondary's session ends with its path, dead or removed.
func isPathEnd(err error) bool {
	var ke *Error
	return errors.As(err, &ke) && (ke.Code == CodePathDead || ke.Code == CodePathRemoved)
}

func isAppClose(err error, code ApplicationErrorCode, remote bool) bool {
	var ae *ApplicationError
	return errors.As(err, &ae) && ae.ErrorCode == code && ae.Remote == remote
}

func isKill(remote bool) func(error) bool {
	return func(err error) bool { return isAppClose(err, chaosKillCode, remote) }
}

func (r *chaosRun) wantErr(what string, err error, ok func(error) bool) {
	if !ok(err) {
		r.t.Errorf("seed %d: %s ended with %v (%T)", r.seed, what, err, err)
	}
}

// await waits for wg, reporting a hang after chaosDeadline.
func (r *chaosRun) await(what string, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(chaosDeadline):
		r.t.Errorf("seed %d: %s still running after %v", r.seed, what, chaosDeadline)
		r.dumpGoroutines()
		return false
	}
}

// awaitErr returns the result on ch (leaving it there for later checks), reporting a hang
// after chaosDeadline.
func (r *chaosRun) awaitErr(what string, ch chan error) (error, bool) {
	select {
	case err := <-ch:
		ch <- err
		return err, true
	case <-time.After(chaosDeadline):
		r.t.Errorf("seed %d: %s still pending after %v", r.seed, what, chaosDeadline)
		r.dumpGoroutines()
		return nil, false
	}
}

var dumpOnce sync.Once

func (r *chaosRun) dumpGoroutines() {
	dumpOnce.Do(func() {
		var b strings.Builder
		pprof.Lookup("goroutine").WriteTo(&b, 1)
		r.t.Logf("goroutines:\n%s", b.String())
	})
}
