package kwikprom_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/internal/selfsigned"
	"github.com/kwik-go/kwik/kwikprom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// newPair returns a client session and the primary's side of it, over UDP on loopback.
func newPair(t *testing.T, ctx context.Context) (client, server kwik.Session) {
	t.Helper()
	serverTLS, clientTLS, err := selfsigned.New()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := kwik.Listen("127.0.0.1:0", serverTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	type res struct {
		s   kwik.Session
		err error
	}
	accepted := make(chan res, 1)
	go func() {
		s, err := ln.Accept(ctx)
		accepted <- res{s, err}
	}()
	client, err = kwik.Dial(ctx, ln.Addr().String(), clientTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	r := <-accepted
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.s.Close() })
	return client, r.s
}

// scrape is one Gather, indexed by metric name.
type scrape map[string]*dto.MetricFamily

func gather(t *testing.T, g prometheus.Gatherer) scrape {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sc := make(scrape)
	for _, mf := range mfs {
		sc[mf.GetName()] = mf
	}
	return sc
}

// series returns the series of name whose labels include want.
func (sc scrape) series(name string, want map[string]string) []*dto.Metric {
	var out []*dto.Metric
	mf := sc[name]
	if mf == nil {
		return nil
	}
next:
	for _, m := range mf.GetMetric() {
		have := make(map[string]string)
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

// value returns the value of the one series of name whose labels include want.
func (sc scrape) value(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	ms := sc.series(name, want)
	if len(ms) != 1 {
		t.Fatalf("%s%v: %d series, want 1", name, want, len(ms))
	}
	m := ms[0]
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("%s%v is neither a counter nor a gauge", name, want)
	return 0
}

func role(r string) map[string]string { return map[string]string{"role": r} }

// The collector follows a real session pair through a transfer and a close: the byte counters
// take the transfer in, the per-path series go with the sessions, and the totals stay.
func TestCollectorLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, server := newPair(t, ctx)

	coll := kwikprom.NewCollector()
	reg := prometheus.NewRegistry()
	reg.MustRegister(coll)
	coll.Track(client)
	coll.Track(server)
	coll.Track(client) // counted once

	before := gather(t, reg)
	for _, r := range []string{"client", "primary"} {
		if n := before.value(t, "kwik_sessions", role(r)); n != 1 {
			t.Errorf("kwik_sessions{role=%q} = %v, want 1", r, n)
		}
		if n := before.value(t, "kwik_paths", map[string]string{"role": r, "status": "active"}); n != 1 {
			t.Errorf("kwik_paths{role=%q,status=active} = %v, want 1", r, n)
		}
		ps := before.series("kwik_path_sent_bytes_total", map[string]string{"role": r, "session": client.ID(), "primary": "true"})
		if len(ps) != 1 {
			t.Errorf("role %s: %d per-path series, want 1", r, len(ps))
		}
	}
	if n := before.value(t, "kwik_sessions", role("secondary")); n != 0 {
		t.Errorf("kwik_sessions{role=secondary} = %v, want 0", n)
	}

	const size = 1 << 20
	received := make(chan error, 1)
	go func() {
		st, err := server.AcceptStream(ctx)
		if err != nil {
			received <- err
			return
		}
		n, err := io.Copy(io.Discard, st)
		if err == nil && n != size {
			err = io.ErrUnexpectedEOF
		}
		received <- err
	}()
	st, err := client.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-received; err != nil {
		t.Fatalf("server read: %v", err)
	}

	after := gather(t, reg)
	sent0, sent1 := before.value(t, "kwik_sent_bytes_total", role("client")), after.value(t, "kwik_sent_bytes_total", role("client"))
	recv0, recv1 := before.value(t, "kwik_received_bytes_total", role("primary")), after.value(t, "kwik_received_bytes_total", role("primary"))
	if sent1-sent0 < size || recv1-recv0 < size {
		t.Errorf("client sent %v -> %v, primary received %v -> %v; want both up by %d", sent0, sent1, recv0, recv1, size)
	}
	if v := after.value(t, "kwik_path_sent_bytes_total", role("client")); v < size {
		t.Errorf("client path sent %v bytes", v)
	}
	if v := after.value(t, "kwik_path_received_packets_total", role("primary")); v == 0 {
		t.Errorf("primary path received no packets")
	}
	for _, r := range []string{"client", "primary"} {
		if rtt := after.value(t, "kwik_path_smoothed_rtt_seconds", role(r)); rtt <= 0 {
			t.Errorf("%s smoothed RTT %v", r, rtt)
		}
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}

	client.Close()
	for _, s := range []kwik.Session{client, server} {
		select {
		case <-s.Context().Done():
		case <-ctx.Done():
			t.Fatalf("%v session still open", s.Role())
		}
	}
	final := gather(t, reg)
	if n := len(final.series("kwik_path_sent_bytes_total", nil)); n != 0 {
		t.Errorf("%d per-path series left after the close", n)
	}
	if n := len(final.series("kwik_path_smoothed_rtt_seconds", nil)); n != 0 {
		t.Errorf("%d RTT series left after the close", n)
	}
	for _, r := range []string{"client", "primary"} {
		if n := final.value(t, "kwik_sessions", role(r)); n != 0 {
			t.Errorf("kwik_sessions{role=%q} = %v after the close", r, n)
		}
		if n := final.value(t, "kwik_sessions_closed_total", role(r)); n != 1 {
			t.Errorf("kwik_sessions_closed_total{role=%q} = %v, want 1", r, n)
		}
		for _, name := range []string{"kwik_sent_bytes_total", "kwik_received_bytes_total"} {
			if a, f := after.value(t, name, role(r)), final.value(t, name, role(r)); f < a {
				t.Errorf("%s{role=%q} went down from %v to %v", name, r, a, f)
			}
		}
	}
}

// fakeSession is a session with fixed Stats; every other method is left unimplemented.
type fakeSession struct {
	kwik.Session
	id     string
	role   kwik.Role
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	stats  kwik.SessionStats
}

func newFake(id string, r kwik.Role, st kwik.SessionStats) *fakeSession {
	ctx, cancel := context.WithCancel(context.Background())
	return &fakeSession{id: id, role: r, ctx: ctx, cancel: cancel, stats: st}
}

func (f *fakeSession) ID() string               { return f.id }
func (f *fakeSession) Role() kwik.Role          { return f.role }
func (f *fakeSession) Context() context.Context { return f.ctx }
func (f *fakeSession) Stats() kwik.SessionStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Two sessions with the same ID, role and path (a client that joined one secondary twice)
// make one per-path series, not a failed scrape; a closed session's numbers stay in the
// totals, exactly.
func TestCollectorFold(t *testing.T) {
	st := func(sent uint64) kwik.SessionStats {
		return kwik.SessionStats{
			Paths:          []kwik.PathStats{{PathInfo: kwik.PathInfo{PathID: "p1", Status: kwik.PathActive}, BytesSent: sent}},
			BytesSent:      sent,
			RawDataDropped: 2,
		}
	}
	a, b := newFake("s1", kwik.RoleSecondary, st(100)), newFake("s1", kwik.RoleSecondary, st(50))
	defer a.cancel()
	defer b.cancel()
	coll := kwikprom.NewCollector()
	reg := prometheus.NewRegistry()
	reg.MustRegister(coll)
	coll.Track(a)
	coll.Track(b)

	names := []string{"kwik_sessions", "kwik_sessions_closed_total", "kwik_sent_bytes_total", "kwik_raw_data_dropped_total"}
	// expect is the exposition with the two sessions' 150 bytes and 4 drops in the totals
	// and open of them still open.
	expect := func(open int) *strings.Reader {
		return strings.NewReader(fmt.Sprintf(`
# HELP kwik_raw_data_dropped_total Relayed raw messages dropped because ReceiveRawData lagged, closed sessions included.
# TYPE kwik_raw_data_dropped_total counter
kwik_raw_data_dropped_total{role="client"} 0
kwik_raw_data_dropped_total{role="primary"} 0
kwik_raw_data_dropped_total{role="secondary"} 4
# HELP kwik_sent_bytes_total KWIK data bytes sent, closed sessions included.
# TYPE kwik_sent_bytes_total counter
kwik_sent_bytes_total{role="client"} 0
kwik_sent_bytes_total{role="primary"} 0
kwik_sent_bytes_total{role="secondary"} 150
# HELP kwik_sessions Tracked KWIK sessions still open.
# TYPE kwik_sessions gauge
kwik_sessions{role="client"} 0
kwik_sessions{role="primary"} 0
kwik_sessions{role="secondary"} %d
# HELP kwik_sessions_closed_total Tracked KWIK sessions that have closed.
# TYPE kwik_sessions_closed_total counter
kwik_sessions_closed_total{role="client"} 0
kwik_sessions_closed_total{role="primary"} 0
kwik_sessions_closed_total{role="secondary"} %d
`, open, 2-open))
	}
	if err := testutil.GatherAndCompare(reg, expect(2), names...); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "kwik_path_sent_bytes_total"); err != nil || n != 1 {
		t.Errorf("per-path series: %d, %v; want 1", n, err)
	}
	a.cancel()
	if err := testutil.GatherAndCompare(reg, expect(1), names...); err != nil {
		t.Error(err)
	}
	b.cancel()
	if err := testutil.GatherAndCompare(reg, expect(0), names...); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "kwik_path_sent_bytes_total"); err != nil || n != 0 {
		t.Errorf("per-path series after the close: %d, %v; want 0", n, err)
	}
}
