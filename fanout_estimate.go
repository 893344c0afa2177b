package kwik

import (
	"maps"
	"slices"
	"sync"
	"time"
)

// What Fanout's scheduler knows of each source's pace: delivery rates, latencies, and when a
// piece given now would reach the client. The decisions that use them are in fanout_sched.go.

// fanoutSample is a delivery rate measured at a time.
type fanoutSample struct {
	rate float64
	at   time.Time
	weak bool // of completions over less than fanoutWeakBusy, or guessed (resolved)
	// guessed: of a completion whose start was guessed (fanoutDone) alone.
	guessed bool
}

// fanoutMark is a count of bytes at a time.
type fanoutMark struct {
	at    time.Time
	bytes int64
}

// pathDelivered records that the client had acknowledged bytes of the primary's path by now.
// Every two round trips of the path (at least 4 fanoutRound: acknowledgements come in
// batches, and reads in bursts) give a delivery rate; the path's rate is the median of the
// recent ones. A rate too high would make the primary queue more than it sends in the time
// the secondaries take (it would finish last); too low, it only takes pieces more often.
func (s *fanoutScheduler) pathDelivered(now time.Time, bytes int64) {
	if s.pathMark.at.IsZero() || bytes < s.pathMark.bytes {
		s.pathMark = fanoutMark{now, bytes}
		return
	}
	el := now.Sub(s.pathMark.at)
	if el < max(2*s.rtt, 4*fanoutRound) {
		return
	}
	s.pathRates = append(s.pathRates, float64(bytes-s.pathMark.bytes)/el.Seconds())
	if len(s.pathRates) > 5 {
		s.pathRates = s.pathRates[1:]
	}
	s.pathMark = fanoutMark{now, bytes}
	rates := slices.Sorted(slices.Values(s.pathRates))
	s.pathRate = rates[len(rates)/2]
}

// fanoutRecall is what a Fanout measured of a path, for the session's next ones: a session
// that serves one large resource after another (kwikhttp) starts each on its paths' known
// pace, not from a probe and a startup.
type fanoutRecall struct {
	rate float64       // a secondary's best recent delivery rate; the primary's path: its rate
	lat  time.Duration // a secondary's delegation latency
	at   time.Time
}

// fanoutRecallAge is how long what a Fanout measured counts for the next ones.
const fanoutRecallAge = 30 * time.Second

// fanoutMemory holds, for a session, what its Fanouts measured, by path ("": the primary's).
type fanoutMemory struct {
	mu    sync.Mutex
	paths map[string]fanoutRecall
}

func (m *fanoutMemory) load() map[string]fanoutRecall {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.paths)
}

func (m *fanoutMemory) store(r map[string]fanoutRecall) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.paths == nil {
		m.paths = make(map[string]fanoutRecall)
	}
	maps.Copy(m.paths, r)
}

// measured is what s measured of each path that carried enough to be measured.
func (s *fanoutScheduler) measured(now time.Time) map[string]fanoutRecall {
	m := make(map[string]fanoutRecall)
	if s.pathRate > 0 {
		m[""] = fanoutRecall{rate: s.pathRate, at: now}
	}
	for _, src := range s.secs {
		if !src.dead && src.rate > 0 {
			m[src.path] = fanoutRecall{rate: src.rate, lat: src.lat, at: now}
		}
	}
	return m
}

// recall starts s from what earlier Fanouts of the session measured, no older than
// fanoutRecallAge: a recalled rate counts as a sample taken now, and ages out as one.
func (s *fanoutScheduler) recall(m map[string]fanoutRecall, now time.Time) {
	if r, ok := m[""]; ok && now.Sub(r.at) < fanoutRecallAge && r.rate > 0 {
		s.pathRate = r.rate
		s.pathRates = []float64{r.rate}
	}
	for _, src := range s.secs {
		src.recall(m, now)
	}
}

// recall starts src from what earlier Fanouts measured of its path (see fanoutScheduler.recall).
func (src *fanoutSource) recall(m map[string]fanoutRecall, now time.Time) {
	r, ok := m[src.path]
	if !ok || src.dead || now.Sub(r.at) >= fanoutRecallAge || r.rate <= 0 || r.lat <= 0 {
		return
	}
	src.rate, src.lat = r.rate, r.lat
	src.samples = []fanoutSample{{rate: r.rate, at: now}}
	src.recalled = true
	src.round, src.roundRate = now, r.rate
	// Out of its startup even if the last Fanout ended in it: its path's congestion window is
	// as it left it, and a startup's target would hold it to the probe until it has delivered
	// in this Fanout (traced: a recalled secondary idle for 100 ms at 400 ms).
	src.flat = fanoutStartupRounds
}

// fanoutDone is a completed piece: the bytes it delivered, from when the source's pipe could
// start on it.
type fanoutDone struct {
	bytes      int64
	start, end time.Time
	// guessed: start is the piece's given time plus the latency assumed for a source not
	// measured yet, neither a measure nor the previous completion.
	guessed bool
}

// ownRate is the primary's rate, in bytes per second.
func (s *fanoutScheduler) ownRate() float64 {
	if s.pathRate > 0 {
		return s.pathRate
	}
	if !s.ownMeasured() {
		return fanoutDefaultRate
	}
	return float64(s.own.bytes) / s.own.busy.Seconds()
}

// ownMeasured says whether anything measured the primary's rate yet: its path's deliveries
// or its writes.
func (s *fanoutScheduler) ownMeasured() bool {
	return s.pathRate > 0 || s.own.busy > 0 && s.own.bytes >= fanoutOwnPiece
}

// ownPeak is the primary's best rate of its path's last three windows (ownRate without
// them): what it may deliver its queue at, for a decision that should err on keeping it.
func (s *fanoutScheduler) ownPeak() float64 {
	if len(s.pathRates) == 0 {
		return s.ownRate()
	}
	return slices.Max(s.pathRates[max(len(s.pathRates)-3, 0):])
}

// rateOf is a secondary's rate, or the primary's until measured.
func (s *fanoutScheduler) rateOf(src *fanoutSource) float64 {
	if src.rate > 0 {
		return src.rate
	}
	return s.ownRate()
}

// latOf is a secondary's delegation latency now: its least one, measured beyond the primary
// path's queue, plus that queue as it is now. A delegation reaches the client behind the
// primary's own bytes, in the queue they fill at its path's bottleneck: traced at 40 ms one
// way, the primary's smoothed round trip was 178 ms against a least of 82 while its pipe
// filled, delegations took 180 to 350 ms to reach their secondaries, and secondaries sized
// for the least latency ran out of work for 100 to 300 ms at a time.
func (s *fanoutScheduler) latOf(src *fanoutSource) time.Duration {
	if src.lat > 0 {
		return src.lat + s.queueDelay()
	}
	return max(2*s.rtt, time.Millisecond) + s.queueDelay()
}

// queueDelay is how long the primary's bytes wait now in its path's queue: its smoothed round
// trip beyond its least one.
func (s *fanoutScheduler) queueDelay() time.Duration {
	if s.pathSRTT > 0 && s.pathMinRTT > 0 {
		return max(s.pathSRTT-s.pathMinRTT, 0)
	}
	return 0
}

// tripOf is how long a piece given to src now takes to start reaching the client: the
// delegation's trip primary → client → secondary and the bytes' back (its latency without
// the completion's notice).
func (s *fanoutScheduler) tripOf(src *fanoutSource) time.Duration {
	return max(s.latOf(src)-s.rtt/2, s.latOf(src)/2)
}

// arrival is when the last byte of a piece of n bytes given to src now should reach the
// client (see arrivals).
func (s *fanoutScheduler) arrival(src *fanoutSource, now time.Time, n int64) time.Time {
	t := now
	if a := s.arrivals(src, now, s.rateOf(src)); len(a) > 0 {
		t = a[len(a)-1]
	}
	return maxTime(t, maxTime(now, src.joinReady).Add(s.tripOf(src))).Add(dur(n, s.rateOf(src)))
}

// arrivals is when the last byte of each of src's outstanding pieces should reach the client,
// at rate: its pieces come in order, each no sooner than its trip after it was given, from
// the arrival of the last one completed (its notice took half a round trip). A source late
// with its first piece (not known complete a round after it was due) is as late with the
// others. The slice is the scheduler's, reused by the next call.
func (s *fanoutScheduler) arrivals(src *fanoutSource, now time.Time, rate float64) []time.Time {
	trip := s.tripOf(src)
	var t time.Time
	if !src.lastDone.IsZero() {
		t = src.lastDone.Add(-s.rtt / 2)
	}
	out := slices.Grow(s.arrivalBuf[:0], len(src.pieces))[:len(src.pieces)]
	s.arrivalBuf = out
	for i, p := range src.pieces {
		t = maxTime(t, src.given(p).Add(trip)).Add(dur(p.n, rate))
		out[i] = t
	}
	if len(out) > 0 {
		if late := now.Sub(out[0].Add(s.rtt/2 + fanoutRound)); late > 0 {
			for i := range out {
				out[i] = out[i].Add(late)
			}
		}
	}
	return out
}

// ownArrival is when the last byte of a piece of n bytes the primary takes now should reach
// the client: after its queue, at its rate, and its path's delay (ownDelay).
func (s *fanoutScheduler) ownArrival(now time.Time, n int64) time.Time {
	return now.Add(dur(s.ownQueued+n, s.ownRate()) + s.ownDelay())
}

// ownDelay is how long a byte the primary sends now takes to reach the client: half its
// path's round trip at the start, and once its path carries data, the path's smoothed round
// trip less half its least one (the queue its own bytes wait in, at the bottleneck, is on
// the way to the client).
func (s *fanoutScheduler) ownDelay() time.Duration {
	if s.pathSRTT > 0 && s.pathMinRTT > 0 {
		return max(s.pathSRTT-s.pathMinRTT/2, s.rtt/2)
	}
	return s.rtt / 2
}

// pathRTT records the primary path's smoothed and least round trips.
func (s *fanoutScheduler) pathRTT(srtt, minRTT time.Duration) {
	s.pathSRTT, s.pathMinRTT = srtt, minRTT
}

// dur is the time n bytes take at rate bytes per second.
func dur(n int64, rate float64) time.Duration {
	return time.Duration(float64(n) / rate * float64(time.Second))
}

// resolved records the outcome of the delegation of path at off: delivered bytes of it reached
// the client (all of them unless failed), known at now. A failed secondary gets no more.
func (s *fanoutScheduler) resolved(path string, off, delivered int64, failed bool, now time.Time, received fanoutCount) {
	src := s.source(path)
	i := -1
	for j, p := range src.pieces {
		if p.off == off {
			i = j
			break
		}
	}
	if i < 0 {
		return
	}
	p := src.pieces[i]
	src.pieces = append(src.pieces[:i], src.pieces[i+1:]...)
	src.outstanding -= p.n
	s.delivered += p.n // delivered, or refilled by the primary
	if failed {
		src.dead = true
		return
	}
	// A secondary sends its pieces in order (sendOrder), so its pipe carried this one from
	// when it reached the secondary, or from the previous completion if later, until now. A
	// delivery rate is the last completions' bytes over the time the pipe was busy with them
	// (not the time it waited for work), over at least two latencies: notices that travel
	// together would make one alone look instantaneous, and the bytes a path recovering a
	// loss held arrive at once. The source's rate is the best of the recent ones.
	lat := s.latOf(src)
	start := maxTime(src.given(p).Add(lat), src.lastDone)
	guess := src.lat == 0 && start.After(src.lastDone)
	if !start.Before(now) {
		// Done before its latency was up (the estimate, from the primary's round trip, was
		// too long): its whole time since it was given, or a burst would look instantaneous.
		start, guess = src.given(p), false
	}
	src.done = append(src.done, fanoutDone{bytes: delivered, start: start, end: now, guessed: guess})
	if len(src.done) > fanoutRateWindow {
		src.done = src.done[1:]
	}
	src.lastDone = maxTime(src.lastDone, now)
	src.delivered += delivered
	src.recents = append(src.recents, fanoutDone{bytes: delivered, end: now})
	src.recent += delivered
	for now.Sub(src.recents[0].end) >= lat+fanoutRound {
		src.recent -= src.recents[0].bytes
		src.recents = src.recents[1:]
	}
	var bytes int64
	var busy time.Duration
	span := max(2*lat, 4*fanoutRound)
	// Fewer completions than span's worth make a sample too, unless the rate was recalled
	// (recall): the first notices of a Fanout that starts with a full queue travel close
	// together (pieces given at once, done one after the other) and look faster than the
	// source is, and the best rate, which sizes its queue, would keep that for fanoutRateAge
	// latencies (traced: 95 Mbit/s for a 50 Mbit/s link, the whole transfer, its queue twice
	// too long, and its last piece 400 ms after everyone else's). The client's counter, when
	// it reports one, measures the path itself over a round trip (sampleReceived) and makes
	// the sample instead.
	sample, ok := src.sampleReceived(now, received, s.rtt)
	src.counted = ok
	// weak: a sample of completions over less than fanoutWeakBusy, which tells nothing of the
	// estimates' errors: the latency a piece's time is counted from is one. A first 64 KiB
	// piece done just as its estimated latency ran out measured 524 Mbit/s (64 KiB over 1 ms)
	// for a 50 Mbit/s path (traced under CPU contention at 10 ms one way: as the best sample
	// it ended the secondary's startup when the next one was lower, 14 MiB were given to each
	// secondary, and the primary sat idle for 700 ms at the end). On a fast path such a sample
	// may be right, so it counts; but a sound one less than a quarter of it shows it an
	// artefact, and removes it. A sample of guessed completions alone is weak too, whatever
	// its length: a secondary nearer the client than the primary completes its first piece
	// before the latency assumed for it (twice the primary's round trip) is up, or just after,
	// and a 20 Mbit/s secondary 96 ms away beside a primary 58 ms away was measured at 84
	// Mbit/s over 6 ms (found by FuzzFanoutScheduler: the next, sound sample ended its startup
	// with that rate standing, it was given 3.4 MB of 8 MiB, and the whole took twice as long
	// as the primary alone would have).
	// Behind completions that are not guessed, a guessed one ends the sample: its error would
	// carry into every sample it is part of. A sound sample less than half a weak one removes
	// it (a quarter for one that is weak by its length alone, fanoutWeakBusy).
	weak, guessed := false, false
	for i := len(src.done) - 1; i >= 0 && !ok; i-- {
		d := src.done[i]
		if d.guessed && bytes > 0 {
			sample, ok = float64(bytes)/max(busy, time.Millisecond).Seconds(), true
			weak = busy < fanoutWeakBusy
			break
		}
		bytes += d.bytes
		busy += max(d.end.Sub(d.start), 0)
		if busy >= span {
			src.recalled = false
		}
		if busy >= span || i == 0 && !src.recalled {
			sample, ok = float64(bytes)/max(busy, time.Millisecond).Seconds(), true
			guessed = d.guessed
			weak = busy < fanoutWeakBusy || guessed
		}
	}
	if ok {
		if !weak {
			src.samples = slices.DeleteFunc(src.samples, func(r fanoutSample) bool {
				return r.weak && (r.rate > 4*sample || r.guessed && r.rate > 2*sample)
			})
		}
		src.samples = append(src.samples, fanoutSample{rate: sample, at: now, weak: weak, guessed: guessed})
	}
	// The best of the last fanoutRateWindow samples, none older than fanoutRateAge rounds
	// but the latest: a source that slows down shows it soon, even with few completions.
	age := max(fanoutRateAge*lat, fanoutRateAge*fanoutRound)
	for len(src.samples) > fanoutRateWindow || len(src.samples) > 1 && now.Sub(src.samples[0].at) > age {
		src.samples = src.samples[1:]
	}
	var best fanoutSample
	for _, r := range src.samples {
		if r.rate > best.rate {
			best = r
		}
	}
	src.rate = best.rate
	if src.round.IsZero() {
		src.round, src.roundRate = now, src.rate
	} else if now.Sub(src.round) >= src.roundOf(lat, s.rtt) {
		if src.rate >= 1.25*src.roundRate {
			src.flat = 0
		} else {
			src.flat++
		}
		src.doubling = src.rate >= 1.5*src.roundRate
		src.round, src.roundRate = now, src.rate
	}
	if last := src.samples[len(src.samples)-1].rate; last < src.rate/2 && !best.weak {
		src.flat = fanoutStartupRounds // slower than it was: not a slow start
	}
	// The latency: what a delegation made to an idle secondary took beyond its transfer
	// (with others outstanding, their transfer times blur it).
	if p.outstanding == p.n {
		took := now.Sub(src.given(p)) - time.Duration(float64(p.n)/src.rate*float64(time.Second))
		// A delegation goes primary → client → secondary and its notice back: at least the
		// primary's round trip (half of it: its smoothed RTT counts its queue), whatever a
		// piece completed early (its bytes sent again by the primary) suggests.
		took = max(took-s.queueDelay(), s.rtt/2, time.Millisecond) // the queue counts apart (latOf)
		if src.lat == 0 || took < src.lat {
			src.lat = took
		}
	}
}

// roundOf is how long a round of src's startup lasts: a round trip when its rate comes from
// the client's counter (a rate that grows shows within one), its latency otherwise (its
// completions show it a latency late).
func (src *fanoutSource) roundOf(lat, rtt time.Duration) time.Duration {
	if src.counted {
		return max(rtt, fanoutRound)
	}
	return lat
}

// fanoutCount is what the client said it had received on a path, and when by its own clock
// (DelegationStatus.path_received, received_at_us); zero: it did not say.
type fanoutCount struct {
	bytes int64
	at    time.Duration
}

// fanoutWeakBusy is the busy time below which a rate sample of completions is weak (resolved).
const fanoutWeakBusy = 2 * time.Millisecond

// fanoutCounterSpan is the least time a delivery rate measured from the client's counter
// spans: its reports come with completions, in bursts.
const fanoutCounterSpan = 250 * time.Millisecond

// sampleReceived records that the client had received b bytes on src's path by now, as its
// report of a completion said (0: it did not say), and returns a delivery rate: what came over
// the last round trip (fanoutCounterSpan at least), or at first over what there is, a round
// trip at least (not when its rate was recalled: see resolved); ok is false without one. The
// counter counts every byte as it comes, whatever piece it belongs to and whenever the
// notices travel (the client's clock times it): a rate that grows (a slow start) shows within a
// round trip, where completions over the time the pipe was busy with them lag by two
// latencies. It would also count the time the source had no work (a slow source the scheduler
// keeps short): a delegation to a source with nothing outstanding starts the marks over
// (delegated).
func (src *fanoutSource) sampleReceived(now time.Time, c fanoutCount, rtt time.Duration) (rate float64, ok bool) {
	b := c.bytes
	if b <= 0 {
		return 0, false
	}
	if c.at > 0 {
		now = time.Unix(0, 0).Add(c.at)
	}
	if n := len(src.marks); n > 0 && (b < src.marks[n-1].bytes || now.Before(src.marks[n-1].at)) {
		src.marks = src.marks[:0] // a counter or clock that went back (the client's mistake): start over
	}
	src.marks = append(src.marks, fanoutMark{now, b})
	span := max(rtt, fanoutCounterSpan)
	full := -1 // the latest mark at least span old
	for i, m := range src.marks {
		if now.Sub(m.at) >= span {
			full = i
		}
	}
	if full > 0 {
		src.marks = src.marks[full:]
	}
	m := src.marks[0]
	el := now.Sub(m.at)
	if el <= 0 || full < 0 && (src.recalled || el < rtt) {
		return 0, false
	}
	if full >= 0 {
		src.recalled = false
	}
	return float64(b-m.bytes) / el.Seconds(), true
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
