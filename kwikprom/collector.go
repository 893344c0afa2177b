// Package kwikprom exports the statistics of KWIK sessions (kwik.Session.Stats) as Prometheus
// metrics. The application creates a Collector, registers it in its own registry and hands it
// each session it wants to see with Track; package kwik itself knows nothing of Prometheus.
//
//	coll := kwikprom.NewCollector()
//	prometheus.MustRegister(coll)
//	sess, _ := ln.Accept(ctx)
//	coll.Track(sess)
//
// Every scrape reads a fresh Stats snapshot of each tracked session. A session is forgotten once
// its Context is done; its final totals are then folded into the per-role counters, so that
// kwik_sent_bytes_total and its kin never go down when sessions come and go.
//
// # Metrics and their cardinality
//
// Per role (client, primary, secondary), always present, so at most a few dozen series:
//
//	kwik_sessions{role}                    gauge: tracked sessions still open
//	kwik_sessions_closed_total{role}       counter: tracked sessions that have closed
//	kwik_paths{role,status}                gauge: paths of the open sessions by status, dead and removed ones included
//	kwik_streams_open{role}                gauge: logical streams open
//	kwik_delegations_in_flight{role}       gauge: delegated ranges not yet complete (client and primary)
//	kwik_sent_bytes_total{role}            counter: KWIK data bytes sent, closed sessions included
//	kwik_received_bytes_total{role}        counter: KWIK data bytes received, closed sessions included
//	kwik_raw_data_dropped_total{role}      counter: relayed raw messages dropped, closed sessions included
//
// Per path, labeled {session, path, role, primary}:
//
//	kwik_path_sent_bytes_total             counter
//	kwik_path_received_bytes_total         counter
//	kwik_path_sent_packets_total           counter
//	kwik_path_received_packets_total       counter
//	kwik_path_acked_packets_total          counter: this side's packets the peer acknowledged
//	kwik_path_smoothed_rtt_seconds         gauge: quic-go's smoothed RTT; absent while unknown
//	kwik_path_delegations_in_flight        gauge: counted on the client only
//
// The per-path series carry the session and path IDs, which are random, so their number grows
// with the number of open sessions times their paths (every path the session ever had). They
// exist only while the session is open: a closed session's series disappear at the next scrape.
// Applications with many short sessions should expect that churn, or aggregate the per-path
// series away with recording rules and keep only the per-role ones.
package kwikprom

import (
	"context"
	"strconv"
	"sync"

	"github.com/kwik-go/kwik"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	roles = [...]kwik.Role{kwik.RoleClient, kwik.RolePrimary, kwik.RoleSecondary}
	// statuses in value order: roleSums.paths is indexed by PathStatus.
	statuses = [...]kwik.PathStatus{kwik.PathActive, kwik.PathDead, kwik.PathConnecting, kwik.PathDisconnecting, kwik.PathRemoved}

	roleLabels = []string{"role"}
	pathLabels = []string{"session", "path", "role", "primary"}

	sessionsDesc     = prometheus.NewDesc("kwik_sessions", "Tracked KWIK sessions still open.", roleLabels, nil)
	closedDesc       = prometheus.NewDesc("kwik_sessions_closed_total", "Tracked KWIK sessions that have closed.", roleLabels, nil)
	pathsDesc        = prometheus.NewDesc("kwik_paths", "Paths of the open KWIK sessions by status, dead and removed ones included.", []string{"role", "status"}, nil)
	streamsDesc      = prometheus.NewDesc("kwik_streams_open", "Logical streams open in the open KWIK sessions.", roleLabels, nil)
	delegsDesc       = prometheus.NewDesc("kwik_delegations_in_flight", "Delegated ranges not yet complete in the open KWIK sessions.", roleLabels, nil)
	sentDesc         = prometheus.NewDesc("kwik_sent_bytes_total", "KWIK data bytes sent, closed sessions included.", roleLabels, nil)
	receivedDesc     = prometheus.NewDesc("kwik_received_bytes_total", "KWIK data bytes received, closed sessions included.", roleLabels, nil)
	droppedDesc      = prometheus.NewDesc("kwik_raw_data_dropped_total", "Relayed raw messages dropped because ReceiveRawData lagged, closed sessions included.", roleLabels, nil)
	pathSentDesc     = prometheus.NewDesc("kwik_path_sent_bytes_total", "KWIK data bytes sent on the path.", pathLabels, nil)
	pathReceivedDesc = prometheus.NewDesc("kwik_path_received_bytes_total", "KWIK data bytes received on the path.", pathLabels, nil)
	pathPktSentDesc  = prometheus.NewDesc("kwik_path_sent_packets_total", "KWIK data packets sent on the path.", pathLabels, nil)
	pathPktRecvDesc  = prometheus.NewDesc("kwik_path_received_packets_total", "KWIK data packets received on the path.", pathLabels, nil)
	pathPktAckedDesc = prometheus.NewDesc("kwik_path_acked_packets_total", "KWIK data packets sent on the path that the peer acknowledged.", pathLabels, nil)
	pathRTTDesc      = prometheus.NewDesc("kwik_path_smoothed_rtt_seconds", "Smoothed RTT of the path's QUIC connection.", pathLabels, nil)
	pathDelegsDesc   = prometheus.NewDesc("kwik_path_delegations_in_flight", "Ranges delegated to the path not yet complete (client side).", pathLabels, nil)

	allDescs = []*prometheus.Desc{
		sessionsDesc, closedDesc, pathsDesc, streamsDesc, delegsDesc, sentDesc, receivedDesc, droppedDesc,
		pathSentDesc, pathReceivedDesc, pathPktSentDesc, pathPktRecvDesc, pathPktAckedDesc, pathRTTDesc, pathDelegsDesc,
	}
)

// Collector is a prometheus.Collector over the KWIK sessions handed to Track. The zero value is
// ready to use, and a Collector is safe for concurrent use.
type Collector struct {
	tracked struct {
		mu       sync.Mutex
		sessions map[kwik.Session]struct{}
		closed   map[kwik.Role]*totals // what the forgotten sessions had carried
	}
}

// totals are the monotonic numbers of one role.
type totals struct {
	sessions, sent, received, dropped uint64
}

// NewCollector returns a Collector that tracks no session yet.
func NewCollector() *Collector {
	return &Collector{}
}

// Track adds s to the sessions c reports, until s's Context is done. Tracking a session twice
// counts it once.
func (c *Collector) Track(s kwik.Session) {
	c.tracked.mu.Lock()
	if c.tracked.sessions == nil {
		c.tracked.sessions = make(map[kwik.Session]struct{})
		c.tracked.closed = make(map[kwik.Role]*totals)
	}
	_, dup := c.tracked.sessions[s]
	c.tracked.sessions[s] = struct{}{}
	c.tracked.mu.Unlock()
	if dup {
		return
	}
	// Collect also forgets the closed sessions it meets, so that a scrape right after a close
	// is exact; this frees them when nobody scrapes. No goroutine waits for the session: the
	// function gets a short-lived one of its own only once the session has closed.
	context.AfterFunc(s.Context(), func() {
		c.tracked.mu.Lock()
		c.forgetLocked(s)
		c.tracked.mu.Unlock()
	})
}

// forgetLocked folds s's final numbers into the closed totals and drops it. Idempotent.
func (c *Collector) forgetLocked(s kwik.Session) {
	if _, ok := c.tracked.sessions[s]; !ok {
		return
	}
	delete(c.tracked.sessions, s)
	st := s.Stats()
	t := c.tracked.closed[s.Role()]
	if t == nil {
		t = new(totals)
		c.tracked.closed[s.Role()] = t
	}
	t.sessions++
	t.sent += st.BytesSent
	t.received += st.BytesReceived
	t.dropped += st.RawDataDropped
}

// Describe sends the descriptors of every metric c can report.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// roleSums are the numbers of one role in one scrape.
type roleSums struct {
	totals  // closed sessions included
	open    int
	streams int
	delegs  int
	paths   [len(statuses)]int
}

// pathKey is the label set of a per-path series that is not a constant.
type pathKey struct {
	session, path string
	role          kwik.Role
}

// Collect reads a Stats snapshot of every tracked session and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	sums := make(map[kwik.Role]*roleSums, len(roles))
	for _, r := range roles {
		sums[r] = new(roleSums)
	}
	sum := func(r kwik.Role) *roleSums {
		if sums[r] == nil {
			sums[r] = new(roleSums)
		}
		return sums[r]
	}
	seen := make(map[pathKey]bool)

	// The lock is held through the whole scrape: a session folded into the closed totals
	// while its per-session numbers were being read would be counted twice, and the counters
	// would go down at the next scrape.
	c.tracked.mu.Lock()
	defer c.tracked.mu.Unlock()
	for s := range c.tracked.sessions {
		if s.Context().Err() != nil {
			c.forgetLocked(s)
			continue
		}
		st := s.Stats()
		role, id := s.Role(), s.ID()
		rs := sum(role)
		rs.open++
		rs.streams += st.StreamsOpen
		rs.delegs += st.DelegationsInFlight
		rs.sent += st.BytesSent
		rs.received += st.BytesReceived
		rs.dropped += st.RawDataDropped
		for _, p := range st.Paths {
			if int(p.Status) >= 0 && int(p.Status) < len(statuses) {
				rs.paths[p.Status]++
			}
			// Two sessions of one process can share an ID and a role (a client that joins the
			// same secondary twice); a duplicate series would fail the whole scrape.
			k := pathKey{id, p.PathID, role}
			if seen[k] {
				continue
			}
			seen[k] = true
			lv := []string{id, p.PathID, role.String(), strconv.FormatBool(p.IsPrimary)}
			ch <- prometheus.MustNewConstMetric(pathSentDesc, prometheus.CounterValue, float64(p.BytesSent), lv...)
			ch <- prometheus.MustNewConstMetric(pathReceivedDesc, prometheus.CounterValue, float64(p.BytesReceived), lv...)
			ch <- prometheus.MustNewConstMetric(pathPktSentDesc, prometheus.CounterValue, float64(p.PacketsSent), lv...)
			ch <- prometheus.MustNewConstMetric(pathPktRecvDesc, prometheus.CounterValue, float64(p.PacketsReceived), lv...)
			ch <- prometheus.MustNewConstMetric(pathPktAckedDesc, prometheus.CounterValue, float64(p.PacketsAcked), lv...)
			ch <- prometheus.MustNewConstMetric(pathDelegsDesc, prometheus.GaugeValue, float64(p.DelegationsInFlight), lv...)
			if rtt := p.QUIC.SmoothedRTT; rtt > 0 {
				ch <- prometheus.MustNewConstMetric(pathRTTDesc, prometheus.GaugeValue, rtt.Seconds(), lv...)
			}
		}
	}
	for r, t := range c.tracked.closed {
		rs := sum(r)
		rs.sessions += t.sessions
		rs.sent += t.sent
		rs.received += t.received
		rs.dropped += t.dropped
	}

	for r, rs := range sums {
		role := r.String()
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(rs.open), role)
		ch <- prometheus.MustNewConstMetric(closedDesc, prometheus.CounterValue, float64(rs.sessions), role)
		ch <- prometheus.MustNewConstMetric(streamsDesc, prometheus.GaugeValue, float64(rs.streams), role)
		ch <- prometheus.MustNewConstMetric(delegsDesc, prometheus.GaugeValue, float64(rs.delegs), role)
		ch <- prometheus.MustNewConstMetric(sentDesc, prometheus.CounterValue, float64(rs.sent), role)
		ch <- prometheus.MustNewConstMetric(receivedDesc, prometheus.CounterValue, float64(rs.received), role)
		ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(rs.dropped), role)
		for i, n := range rs.paths {
			ch <- prometheus.MustNewConstMetric(pathsDesc, prometheus.GaugeValue, float64(n), role, statuses[i].String())
		}
	}
}
