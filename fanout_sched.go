package kwik

import (
	"slices"
	"time"
)

// fanoutScheduler decides, for Fanout, who serves each next piece of a resource: the primary
// itself or one of the secondaries. It is free of I/O and of the clock (every method is given
// the time), so it is tested without sockets.
//
// Fanout hands the resource out in order: each piece is the next bytes of the stream, and a
// source is given one when its pipe runs short of work (a pull model: every source stays
// busy, and each takes pieces at its own pace, so faster ones take more). The rules:
//   - The first piece is the primary's: the first byte leaves at once, as from one server.
//     It is as long as the client's credit already allows (64 KiB to 1 MiB): pieces
//     delegated below the primary's own would use that credit up, and the primary would wait
//     a round trip for more (traced: its path idle for 80 ms at 40 ms one way).
//   - Each source keeps a queue of work: the primary, enough for its writer not to run dry
//     between two decisions (until something measures its rate, no more than a secondary's
//     probe); a secondary, enough to cover its delegation latency (the trip
//     primary → client → secondary, and the notice of completion back) and a round more,
//     with a margin, so that its pipe stays full and its congestion window can grow. Among
//     the sources short of work, the one with the least queued relative to its target gets
//     the piece.
//   - A secondary's piece is an eighth of its target (64 KiB to 1 MiB), and 64 KiB until its
//     rate is measured: completions come often enough to measure it, and one piece holds the
//     reader up little. The primary knows a piece done only when all of it is: until then
//     its bytes count as queued, even those already at the client. An eighth, not a quarter,
//     halves that error, which left secondaries idle with their whole target still counted
//     as outstanding (traced at 40 ms one way).
//   - ECF: a secondary never gets a piece it would deliver after all the sources together
//     should have sent everything; so a resource too small for delegation to pay off is the
//     primary's alone, and a slow secondary does not hold up the tail. At the end (what is
//     left fits in the queues), each piece goes to the source that would deliver it first,
//     the primary included; one that would, but has no room yet, is waited for.
//   - BLEST: out of the end, a measured secondary gets no piece it would deliver more than a
//     round trip after the primary's bytes taken now (its queue full): the reader would
//     wait at its gap with the window full of the primary's bytes.
//   - Once everything is assigned, the estimates' errors are repaired both ways: the primary
//     sends again the last bytes of a secondary slower than its model (duplicate; one in its
//     slow start, whose measure lags its pipe, only if the primary beats it by far), and gives
//     the last pieces of its own queue that its writer has not started to a secondary that
//     would deliver them sooner (handBack).
//   - The bet on a secondary not measured yet (its probe, given as if it were as fast as the
//     primary) has a safety net whatever bounds the copies: the probe's pieces are sent
//     again when overdue, or at the end when the primary would deliver them sooner, and a
//     source with no piece done long after its latency and a round trip more is taken for
//     behind. A first completion timed from the latency assumed for its source (not yet
//     measured) is a weak sample: it never ends a startup, and never earns the source the
//     primary's queue (handBack). FuzzFanoutScheduler runs all this in the simulator far from
//     the benchmarks' cases (a byte to 64 MiB, 1 Mbit/s to 1 Gbit/s, up to seven secondaries).
//   - Credit is not the scheduler's concern: the client's window covers every range
//     delegated (handleDelegateRange), and with it the primary's own pieces below them.
//
// Estimates: the primary's rate is the median of its path's recent delivery rates (bytes
// acknowledged over two round trips), or what its writes achieved. A secondary's rate is the
// best of its recent delivery rates, none older than ten latencies: what the client says it
// received on the path over its last round trip (DelegationStatus.path_received, timed by
// the client's clock), or, from a client that does not say, each completion over the time
// its pipe was busy with it (a piece done before its latency was up counts its whole time):
// a source kept short of work shows less than it can carry, never more. Until
// its first completion a secondary is assumed as fast as the primary when its pieces' arrival
// is modelled, and may have fanoutProbe outstanding (the primary's first measure comes from its
// own slow start); then, while its rate still grows round after round (its slow
// start), its gain is doubled, and its queue is at least four times what it delivered over
// its last loop, within the probe plus four times all it delivered (a slow start doubles
// every round trip, and its loop is two). Its latency is the least time a delegation took
// beyond its transfer, starting from two round trips of the primary's path. When a piece
// would arrive is modelled per source (arrival): a secondary serves its pieces in order, each
// no sooner than its trip after it was given, from the arrival of the last one completed.
type fanoutScheduler struct {
	size  int64 // bytes to serve
	off   int64 // next byte to assign
	chunk int64 // fixed piece size for secondaries; 0: adaptive
	// first is the primary's first piece: what the client's credit already lets it send
	// (fanoutFirstPiece to fanoutMaxChunk). Pieces delegated below the primary's own would use
	// up that credit, and its first round trip would wait for more.
	first int64
	count int // fixed cap on a secondary's outstanding delegations; 0: none
	rtt   time.Duration
	// pathRate is what the primary's own path carries, in bytes per second: the best recent
	// rate at which the client acknowledged its bytes (pathDelivered); 0: unknown (then its
	// writes measure it).
	pathRate             float64
	pathSRTT, pathMinRTT time.Duration // the primary path's round trips now (ownDelay)
	pathMark             fanoutMark    // the start of the current measurement
	pathRates            []float64     // recent measurements

	own struct {
		bytes int64
		busy  time.Duration // time spent in Write
	}
	ownQueued int64 // bytes the primary took and has not written yet
	dupQueued int64 // bytes the primary is sending again (duplicate), not written yet
	dupBytes  int64 // bytes the primary sent again in all
	secs      []*fanoutSource
	// arrivalBuf is arrivals' result, reused: the scheduler decides once per piece.
	arrivalBuf []time.Time
	delivered  int64 // bytes known to be at the client: the primary's and completed delegations'
}

// fanoutSource is one secondary as the scheduler sees it.
type fanoutSource struct {
	path        string
	dead        bool
	outstanding int64 // bytes delegated and not yet resolved
	pieces      []fanoutPiece
	lat         time.Duration  // least delegation latency beyond transfer; 0: none measured
	lastDone    time.Time      // the latest completion
	rate        float64        // bytes per second, the best recent delivery rate; 0 until measured
	recalled    bool           // its rate is the last Fanout's, until a sample of its own spans two latencies
	done        []fanoutDone   // the last completions
	samples     []fanoutSample // recent delivery rates
	// Startup, as BBR's: while the rate grows by a quarter or more every round (roundOf), the
	// source is still in slow start, and its measured rate lags what it can carry.
	round     time.Time // the start of the current round
	roundRate float64   // the rate at its start
	flat      int       // rounds in a row the rate did not grow by a quarter
	delivered int64     // bytes of its completed pieces
	// recent is what it delivered over its last loop (a latency and a round) up to its latest
	// completion: in a slow start, what its pipe carries now, which its rate (over at least
	// two latencies of busy time) lags.
	recent  int64
	recents []fanoutDone // the completions recent counts
	// marks are what the client said it had received on the path and when (sampleReceived),
	// over the last round trip and one before, since the source last had work.
	marks    []fanoutMark
	counted  bool // its latest rate sample came from the client's counter
	doubling bool // its rate grew by half or more over its last round
	// joinReady, for a path given pieces while the client was still joining it
	// (Session.JoinPath): the client holds them until the join ends, so they count as
	// given no sooner than this. Expected at first; once the join has ended, when the client
	// handed them over, less the primary's half of the trip.
	joinReady   time.Time
	joinPending bool // the join has not ended yet
}

// given is when piece p counts as given to src: when it was, or once the client could hand
// it over.
func (src *fanoutSource) given(p fanoutPiece) time.Time { return maxTime(p.at, src.joinReady) }

// soundRate says whether src's rate is measured by a sound sample, not a weak one alone
// (resolved): a first piece's time counted from a guessed latency measured a 1 Mbit/s
// secondary at 229 Mbit/s, and handBack gave it 576 KiB of the primary's queue
// (FuzzFanoutScheduler: 12.8 s where the primary alone takes 6.6).
func (src *fanoutSource) soundRate() bool {
	return src.rate > 0 && slices.ContainsFunc(src.samples, func(r fanoutSample) bool { return !r.weak })
}

// startup says whether src's rate is still growing (see fanoutSource.round).
func (src *fanoutSource) startup() bool { return src.rate > 0 && src.flat < fanoutStartupRounds }

type fanoutPiece struct {
	off, n      int64
	at          time.Time
	outstanding int64 // the source's outstanding bytes when assigned, this piece included
	dupN        int64 // the primary sent its last dupN bytes again (0: none)
	// probe: given before anything measured the source, on the bet that it is about as fast
	// as the primary. Sending it again is the bet's safety net, whatever bounds copies.
	probe bool
}

const (
	fanoutFirstPiece = 64 << 10 // written by the primary before anything is delegated
	fanoutOwnPiece   = 64 << 10 // the primary's pieces
	// fanoutOwnQueue is the least the primary keeps queued for its writer.
	fanoutOwnQueue = 4 * fanoutOwnPiece
	// fanoutMaxOwnPieces bounds the primary's own pieces queued for its writer.
	fanoutMaxOwnPieces = 256
	fanoutMinChunk     = 64 << 10
	fanoutMaxChunk     = 1 << 20
	fanoutRateWindow   = 16      // completions a secondary's rate is the best of
	fanoutRateAge      = 10      // latencies (at least rounds) a rate sample counts for
	fanoutProbe        = 1 << 20 // outstanding on a secondary until its rate is known
	// fanoutJoiningProbe is what a secondary still joining may have outstanding: what the
	// client holds for it until then, and the primary sends again if the join is late.
	fanoutJoiningProbe = 512 << 10
	// fanoutRound is how often, at least, the scheduler decides: the margin every source's
	// queue keeps beyond its latency.
	fanoutRound = 50 * time.Millisecond
	// fanoutGain is how much more than its rate × (latency + a round) a secondary may have
	// outstanding: a pipe given just what it carries cannot show that it carries more.
	fanoutGain = 2
	// fanoutStartupGain replaces fanoutGain while a secondary's rate still grows round after
	// round (its congestion window doubles every round trip; what it delivered lags by two),
	// until fanoutStartupRounds rounds in a row without growth.
	fanoutStartupGain   = 4
	fanoutStartupRounds = 3
	// fanoutDoublingGain replaces fanoutStartupGain, for what a secondary delivered over its
	// last loop, while its rate grew by half or more over its last round: a loop spans two
	// round trips or more, each doubling what its pipe carries, and what it delivered is
	// known half a round trip late (traced at 100 ms one way: both secondaries idle for
	// 100 ms as their slow starts ended, their queues sent).
	fanoutDoublingGain = 8
	// fanoutOverdue is how late, at least, a secondary's piece is before the primary sends it
	// again (two of the primary's round trips if longer).
	fanoutOverdue = 100 * time.Millisecond
	// fanoutDefaultRate is assumed for the primary before anything measures it: 40 Mbit/s.
	fanoutDefaultRate = 5e6
)

func newFanoutScheduler(size int64, rtt time.Duration, paths []string, o *FanoutOptions) *fanoutScheduler {
	s := &fanoutScheduler{size: size, chunk: o.ChunkSize, count: o.MaxInFlight, rtt: rtt}
	for _, p := range paths {
		s.secs = append(s.secs, &fanoutSource{path: p})
	}
	return s
}

// targetOf is how many bytes src may have outstanding.
func (s *fanoutScheduler) targetOf(src *fanoutSource) int64 {
	t := s.steadyTarget(src)
	if src.startup() {
		// Its first measures come from its slow start: a larger gain, and at least four
		// times what it delivered over its last loop, eight while it doubles (its rate
		// lags what its pipe carries now, and a pipe short of work in its slow start stops
		// growing); never less than the probe, and, as a slow start over a loop of two
		// round trips, not more than four times all it delivered beyond it.
		t = int64(fanoutStartupGain * s.rateOf(src) * (s.latOf(src) + fanoutRound).Seconds())
		recent := fanoutStartupGain * src.recent
		if src.doubling {
			recent = fanoutDoublingGain * src.recent
		}
		t = max(t, recent)
		t = min(max(t, fanoutProbe), fanoutProbe+fanoutStartupGain*src.delivered)
	}
	return max(t, fanoutMinChunk)
}

// steadyTarget is src's target out of its startup.
func (s *fanoutScheduler) steadyTarget(src *fanoutSource) int64 {
	t := int64(fanoutGain * s.rateOf(src) * (s.latOf(src) + fanoutRound).Seconds())
	if src.rate == 0 {
		// Unmeasured: the probe, whatever the primary's rate says. That rate's first measure
		// comes from the primary's own slow start (traced at 40 ms one way: 3.4 Mbit/s on a
		// 50 Mbit/s path), and two secondaries that joined at the first large response had
		// their targets cut to 180 KiB and ran dry once the pieces held for their join were
		// done, until their own first completion.
		t = fanoutProbe
	}
	if src.joinPending {
		t = min(t, fanoutJoiningProbe)
	}
	return max(t, fanoutMinChunk)
}

// ownTarget is how many bytes the primary keeps queued for its writer: as long a queue, in
// time, as the secondaries' (their pieces and its own, taken at the same time, then reach the
// client at about the same time, and the reader finds few gaps), and at least enough not to
// run dry between two decisions. A secondary in its startup counts with what it may have
// outstanding now, not with its gain: the primary would otherwise take, at its first
// measure, far more than the secondaries, and its bytes would wait above their gaps.
func (s *fanoutScheduler) ownTarget() int64 {
	var wait time.Duration
	for _, src := range s.secs {
		if !src.dead {
			wait = max(wait, dur(min(s.targetOf(src), s.steadyTarget(src)), s.rateOf(src)))
		}
	}
	t := max(int64(s.ownRate()*max(wait, fanoutRound).Seconds()), fanoutOwnQueue)
	if !s.ownMeasured() {
		// Unmeasured, the primary is a probe, as a secondary is: at fanoutDefaultRate, and
		// a secondary's first measure from its slow start making its queue last seconds,
		// it took 2.3 MiB on a path of 10 Mbit/s (traced at 40 ms one way, a secondary of
		// 100); the reader then waited at its bytes for a second, and the secondary, the
		// client's window full above them, idled.
		t = min(t, fanoutProbe)
	}
	return min(t, (fanoutMaxOwnPieces-1)*fanoutOwnPiece)
}

// chunkFor is the size of the next piece for src.
func (s *fanoutScheduler) chunkFor(src *fanoutSource) int64 {
	if s.chunk > 0 {
		return s.chunk
	}
	if src.rate == 0 {
		// Until measured, small pieces: the first completes within the source's slow start,
		// and the reader never waits long at one.
		return fanoutMinChunk
	}
	n := s.targetOf(src) / 8
	return min(max(n, fanoutMinChunk), fanoutMaxChunk) &^ (16<<10 - 1)
}

// endPhase says whether what is left to assign fits in the sources' queues.
func (s *fanoutScheduler) endPhase() bool {
	return s.chunk == 0 && s.size-s.off <= s.ownTarget()+s.queued()
}

// next says who serves the piece at the current offset, now: a secondary's path and the
// piece's length, or "" and the length the primary takes for itself. ok is false when no
// source should take it yet: then the caller waits until a piece is written or a delegation
// resolves. n is 0 when everything is assigned.
func (s *fanoutScheduler) next(now time.Time) (path string, n int64, ok bool) {
	rest := s.size - s.off
	if rest <= 0 {
		return "", 0, true
	}
	if s.off == 0 {
		if s.chunk > 0 {
			return "", min(rest, s.chunk), true
		}
		return "", min(rest, max(s.first, fanoutFirstPiece)), true
	}
	total := s.ownRate()
	for _, src := range s.secs {
		if !src.dead {
			total += s.rateOf(src)
		}
	}
	// When everything should be at the client if every source keeps its pace.
	left := rest + s.ownQueued
	for _, src := range s.secs {
		left += src.outstanding
	}
	end := now.Add(dur(left, total))
	ownArr := s.ownArrival(now, min(rest, fanoutOwnPiece))
	ownFill := float64(s.ownQueued) / float64(s.ownTarget())
	// The latest a secondary's piece may arrive: a round trip (at least two rounds) after
	// the primary's would with its queue full.
	ownLatest := now.Add(dur(max(s.ownTarget(), s.ownQueued), s.ownRate()) + s.ownDelay() + max(s.rtt, 2*fanoutRound))
	// The end: what is left fits in the sources' queues. Each piece then goes to the source
	// that would deliver it first (ECF), the primary included, so that all finish together;
	// a secondary that would, but has no room yet, is waited for.
	endPhase := s.endPhase()
	var best *fanoutSource
	var bestFill float64
	var bestArr time.Time
	waitFor := false
	for _, src := range s.secs {
		if src.dead || s.count > 0 && len(src.pieces) >= s.count {
			continue
		}
		piece := min(s.chunkFor(src), rest)
		target := s.targetOf(src)
		arr := s.arrival(src, now, piece)
		if s.chunk == 0 {
			// ECF: not a piece this secondary would deliver after all the sources together
			// should have sent everything, unless the primary would be later still.
			if arr.After(maxTime(end, ownArr)) {
				continue
			}
			// BLEST: not a piece that would reach the client so long after the primary's
			// bytes taken now that the reader, waiting for it, would hold the window full of
			// them: the primary takes it (or, its queue full, the piece waits).
			if !endPhase && src.rate > 0 && !src.startup() && arr.After(ownLatest) {
				continue
			}
		}
		if (s.chunk == 0 || s.count == 0) && src.outstanding+piece > max(target, piece) {
			waitFor = waitFor || endPhase && arr.Before(ownArr)
			continue
		}
		fill := float64(src.outstanding) / float64(target)
		if best == nil || (endPhase && arr.Before(bestArr)) || (!endPhase && fill < bestFill) {
			best, bestFill, bestArr = src, fill, arr
		}
	}
	switch {
	case best == nil:
	case s.chunk > 0:
		return best.path, min(s.chunkFor(best), rest), true
	case endPhase && bestArr.Before(ownArr):
		return best.path, min(s.chunkFor(best), rest), true
	case !endPhase && (ownFill >= 1 || bestFill < ownFill):
		return best.path, min(s.chunkFor(best), rest), true
	}
	if ownFill < 1 && !waitFor {
		return "", min(rest, fanoutOwnPiece), true
	}
	return "", 0, false
}

// duplicate picks a piece a secondary owes for the primary to send again: while the transfer is
// under way, an overdue one (rescue); once everything is assigned, one the primary would
// deliver sooner itself, after what it has queued: of those, the one the secondary is
// expected to deliver last (arrival's model: in order, at its rate, from its last
// completion). The primary sends it again and the client keeps the first copy, so a
// secondary slower than estimated does not hold the tail. At most an eighth of the resource
// is sent twice.
func (s *fanoutScheduler) duplicate(now time.Time) (off, n int64, ok bool) {
	if s.chunk > 0 || s.dupQueued > 0 {
		return 0, 0, false
	}
	if s.off < s.size {
		return s.rescue(now, false)
	}
	// A join that is late holds its pieces at the client, whatever the model says of its
	// rate: they are sent again as overdue, past the bound, as while the transfer was under
	// way (the transfer may well have been assigned before they came due).
	if off, n, ok := s.rescue(now, true); ok {
		return off, n, true
	}
	var best *fanoutPiece
	var bestGain time.Duration
	var bestN int64
	own := s.ownRate()
	for _, src := range s.secs {
		if len(src.pieces) == 0 {
			continue
		}
		rate := s.rateOf(src)
		waited := now.Sub(src.given(src.pieces[0]))
		// silent: not one piece done yet, long after its latency and a round trip more (a
		// first piece in a slow start takes two). It carries less than a piece over that
		// time, whatever the primary's rate suggested, and is behind: modelled at that bound
		// it would always deliver at once. (After twice its latency, a 1 Mbit/s secondary
		// beside a 192 Mbit/s primary, 111 ms away, held its 512 KiB to 587 ms of a 3 MiB
		// resource the primary alone sends in 242; not taken for behind, one 192 ms away
		// held its first piece to 620 ms beside a primary 1 ms away: FuzzFanoutScheduler.)
		silent := src.rate == 0 && waited > s.latOf(src)+s.rtt+fanoutRound
		if silent {
			rate = min(rate, float64(src.pieces[0].n)/waited.Seconds())
		}
		// A source behind its model (its first piece overdue) may be slower than its rate
		// says: only a whole piece is sent again then, whose arrival does not depend on it.
		// So is a piece of a path whose join has not ended: the client holds all of it.
		whole := src.joinPending || silent || s.behind(src, now, rate)
		if src.startup() && !whole && s.ownQueued > 0 && !s.behind(src, now, fanoutDoublingGain*rate) {
			// In its slow start its measure lags its pipe, which doubles every round trip
			// (traced at 40 ms one way, 8 MiB from three servers of 50 Mbit/s: measured at
			// 23 Mbit/s, both secondaries were taken for late, and the primary, last to
			// finish, sent 7 % of the resource again, 100 ms of its own path). Only one that
			// the primary would beat even at the most its target allows for (a doubling
			// pipe's) is sent again; one behind even its measure is, whole, above. Not one
			// behind even that allowance: a secondary of 1 Mbit/s beside a primary of 192,
			// modelled at eight times its measure, kept its pieces of its 1 MiB probe to the
			// end (found by FuzzFanoutScheduler: 2.4 s, the primary alone 1.65). Nor once the
			// primary's own queue is sent: a copy then costs it nothing it would do instead (a
			// secondary of 8 Mbit/s kept most of its probe 370 ms past a primary of 732).
			rate *= fanoutDoublingGain
		}
		// Silent, a source tells nothing of when it will deliver (arrivals, at the bound of
		// its rate, has it deliver at once): each piece is expected no sooner than as late
		// again as its first already is, so that the primary, idle, sends again what it would
		// deliver sooner. (Modelled at once, a 1 Mbit/s secondary beside a 192 Mbit/s primary
		// held 512 KiB of a 3 MiB resource to twice the primary's time alone:
		// FuzzFanoutScheduler.) Not one that completed pieces and is behind now: that one is
		// usually recovering a loss, and copies on that guess slowed the primary's own queue
		// (3 x 50 at 40 ms, 16 MiB: 0.97 to 0.90 of striping).
		var lateBy time.Duration
		if silent {
			lateBy = max(now.Sub(src.given(src.pieces[0]).Add(s.tripOf(src))), 0)
		}
		arrivals := s.arrivals(src, now, rate)
		for i, arrival := range arrivals {
			if silent { // the pieces after the first still come in order, at its rate
				arrival = maxTime(arrival, now.Add(lateBy+arrival.Sub(arrivals[0])))
			}
			p := &src.pieces[i]
			if p.dupN == p.n {
				continue
			}
			// The primary sends the piece's last k bytes again (the secondary sends its piece
			// in order: those come last), k such that both halves arrive together, in whole
			// 64 KiB blocks of the piece; the piece is then complete when the later half is.
			slack := arrival.Sub(now) - dur(s.ownQueued, own) - s.ownDelay()
			if slack <= 0 {
				continue
			}
			k := int64(slack.Seconds() / (1/rate + 1/own))
			k = p.n - max(p.n-k, 0)/fanoutMinChunk*fanoutMinChunk
			if whole {
				k = p.n
			}
			if k <= p.dupN {
				// A piece sent again in part is sent again only with more of it: a tail
				// copied on a model the source then fell short of (a 20 Mbit/s secondary
				// measured at 35) left its head 260 ms after the primary's last byte (found
				// by FuzzFanoutScheduler).
				continue
			}
			if s.dupBytes+k > s.size/8 && !p.probe {
				continue
			}
			mine := now.Add(dur(s.ownQueued+k, own) + s.ownDelay())
			done := maxTime(arrival.Add(-dur(k, rate)), minTime(arrival, mine))
			if k == p.n {
				done = minTime(arrival, mine) // all of it from whichever comes first
			}
			if gain := arrival.Sub(done); gain > 0 && (best == nil || gain > bestGain) {
				best, bestGain, bestN = p, gain, k
			}
		}
	}
	if best == nil {
		return 0, 0, false
	}
	best.dupN = bestN
	s.dupQueued += bestN
	s.dupBytes += bestN
	return best.off + best.n - bestN, bestN, true
}

// handBack picks, once everything is assigned, a secondary that would deliver the last bytes
// of the primary's queue, which its writer has not started, sooner than the primary: ECF's
// mistake the other way round from duplicate's. A secondary faster than its estimate (its
// rate lags a slow start, or a loss recovery weighs on it) runs out of work while the primary
// still has a queue of up to a latency and more, which its path alone then carries (traced at
// 100 ms one way: 100 to 250 ms at the end with the secondaries idle). It returns the
// secondary and how many bytes of the queue's tail to give it: as many as make both finish
// together, after the secondary's own pieces and its trip, in whole pieces of the primary's,
// the piece being written kept. Only a soundly measured secondary, and only for a gain of half a
// round at least: the estimates' noise is not worth a delegation. The primary counts at its
// best recent rate (ownPeak), not its median: traced at 100 ms one way, the median still held
// a slow start and a loss recovery at the end (20 Mbit/s for a path carrying 50), and handed
// the primary's tail to secondaries already holding a second of work. The choice corrects
// itself: a secondary slower than estimated has its piece sent again (duplicate).
func (s *fanoutScheduler) handBack(now time.Time) (path string, n int64, ok bool) {
	if s.chunk > 0 || s.off < s.size || s.ownQueued < 2*fanoutOwnPiece {
		return "", 0, false
	}
	own := s.ownPeak()
	ownEnd := now.Add(dur(s.ownQueued, own) + s.ownDelay())
	var best *fanoutSource
	for _, src := range s.secs {
		if src.dead || !src.soundRate() || s.count > 0 && len(src.pieces) >= s.count {
			continue
		}
		rate := s.rateOf(src)
		slack := ownEnd.Sub(s.arrival(src, now, 0))
		if slack <= 0 {
			continue
		}
		k := int64(slack.Seconds() / (1/rate + 1/own))
		k = min(k, s.ownQueued-fanoutOwnPiece) / fanoutOwnPiece * fanoutOwnPiece
		if k > n && dur(k, own) >= fanoutRound/2 {
			best, n = src, k
		}
	}
	if best == nil {
		return "", 0, false
	}
	return best.path, n, true
}

// behind says whether src's first outstanding piece, at rate, should have reached the
// client more than a round (and half a round trip, for its notice) ago.
func (s *fanoutScheduler) behind(src *fanoutSource, now time.Time, rate float64) bool {
	if len(src.pieces) == 0 {
		return false
	}
	var t time.Time
	if !src.lastDone.IsZero() {
		t = src.lastDone.Add(-s.rtt / 2)
	}
	p := src.pieces[0]
	due := maxTime(t, src.given(p).Add(s.tripOf(src))).Add(dur(p.n, rate))
	return now.After(due.Add(s.rtt/2 + fanoutRound))
}

// rescue picks, while the transfer is under way, the lowest piece a secondary owes that it
// should have delivered (in order, at its rate, after its latency) more than fanoutOverdue ago,
// and that the primary has not sent again yet. A secondary slower than
// its estimate, or not measured yet, or a path in loss recovery, holds the reader at its gap,
// and then, once the window fills, every other source, the primary's own queue included: the
// primary sends the piece again at once, on a writer of its own. joining limits it to the
// paths whose join has not ended.
func (s *fanoutScheduler) rescue(now time.Time, joining bool) (off, n int64, ok bool) {
	var low *fanoutPiece
	for _, src := range s.secs {
		if len(src.pieces) == 0 || joining && !src.joinPending {
			continue
		}
		// Its pieces come in order: each is due once those before it are, and its latency
		// after it was given, at three quarters of its rate (the best it showed: its bytes
		// come in bursts, and a path recovering a loss holds them for a round trip or two).
		rate, lat := 0.75*s.rateOf(src), s.latOf(src)
		due := src.lastDone
		for i := range src.pieces {
			p := &src.pieces[i]
			due = maxTime(due, src.given(*p).Add(lat)).Add(dur(p.n, rate))
			if low != nil && p.off > low.off {
				break
			}
			// A path whose join is late has all its pieces sent again, whatever the bound:
			// the client holds them, and the reader waits for them, until the join ends. So
			// has a source its probe: a secondary of 1 Mbit/s beside a primary of 16 held
			// most of its 1 MiB probe of a 3 MiB resource, the bound spent, and the whole
			// took three times as long as the primary alone (found by FuzzFanoutScheduler).
			capped := s.dupBytes+p.n > s.size/8 && !src.joinPending && !p.probe
			if p.dupN < p.n && !capped && now.Sub(due) >= max(3*s.rtt, fanoutOverdue) {
				low = p
				break
			}
		}
	}
	if low == nil {
		return 0, 0, false
	}
	low.dupN = low.n
	s.dupQueued += low.n
	s.dupBytes += low.n
	return low.off, low.n, true
}

// duplicated records that the primary wrote n bytes it sent again.
func (s *fanoutScheduler) duplicated(n int64) { s.dupQueued -= n }

// busy says whether anything is under way: the primary's writes or a delegation.
func (s *fanoutScheduler) busy() bool {
	if s.ownQueued > 0 || s.dupQueued > 0 {
		return true
	}
	for _, src := range s.secs {
		if len(src.pieces) > 0 {
			return true
		}
	}
	return false
}

// queued is what the secondaries may have outstanding together.
func (s *fanoutScheduler) queued() int64 {
	var n int64
	for _, src := range s.secs {
		if !src.dead {
			n += s.targetOf(src)
		}
	}
	return n
}

// reserved records that the primary takes the n bytes at the current offset, to write them
// itself (they are queued until wrote).
func (s *fanoutScheduler) reserved(n int64) {
	s.off += n
	s.ownQueued += n
}

// wrote records that the primary wrote n of its queued bytes, which took d. Only a write that
// had the client's credit for all of it (credited) measures the primary's own pipe: credit
// waits measure the reader.
func (s *fanoutScheduler) wrote(n int64, d time.Duration, credited bool) {
	if credited {
		s.own.bytes += n
		s.own.busy += d
	}
	s.ownQueued -= n
	s.delivered += n
}

// delegated records that n bytes at the current offset went to path at now.
func (s *fanoutScheduler) delegated(path string, n int64, now time.Time) {
	s.source(path).add(s.off, n, now)
	s.off += n
}

// handedBack records that n bytes at off, the last of the primary's queue, went to path at
// now instead (handBack).
func (s *fanoutScheduler) handedBack(path string, off, n int64, now time.Time) {
	s.ownQueued -= n
	s.source(path).add(off, n, now)
}

// add records a piece given to src: its pieces stay in the order of their offsets, the order
// it serves them in (sendOrder).
func (src *fanoutSource) add(off, n int64, now time.Time) {
	if src.outstanding == 0 {
		// Its pipe had no work: a rate measured across that time would count it
		// (sampleReceived starts over).
		src.marks = src.marks[:0]
	}
	src.outstanding += n
	i := len(src.pieces)
	for i > 0 && src.pieces[i-1].off > off {
		i--
	}
	src.pieces = slices.Insert(src.pieces, i, fanoutPiece{off: off, n: n, at: now, outstanding: src.outstanding, probe: src.rate == 0})
}

func (s *fanoutScheduler) source(path string) *fanoutSource {
	for _, src := range s.secs {
		if src.path == path {
			return src
		}
	}
	src := &fanoutSource{path: path, dead: true} // not one of ours: never chosen
	s.secs = append(s.secs, src)
	return src
}

// join adds a secondary that joined while the transfer is under way (FanoutOptions.Joining):
// it takes pieces from now on, as one measured by nothing yet. A path already known, dead or
// alive, is left as it is.
func (s *fanoutScheduler) join(path string) *fanoutSource {
	for _, src := range s.secs {
		if src.path == path {
			return nil
		}
	}
	src := &fanoutSource{path: path}
	s.secs = append(s.secs, src)
	return src
}

// joining records that path, just given to the scheduler, is still joining at now: the
// client answers the primary's request after half a round trip, then joins the secondary in
// two (QUIC's handshake and KWIK's), and hands over what it holds.
func (s *fanoutScheduler) joining(path string, now time.Time) {
	if src := s.source(path); !src.dead {
		src.joinReady, src.joinPending = now.Add(2*s.rtt), true
	}
}

// joined records that the join of path ended at now, as the primary learns it (the client
// answered half a round trip ago, as it handed over what it held). A failed join fails its
// pieces (resolved).
func (s *fanoutScheduler) joined(path string, now time.Time) {
	src := s.source(path)
	src.joinReady, src.joinPending = now.Add(-s.rtt), false
}

// kill stops giving path work (it died, or Delegate refused it).
func (s *fanoutScheduler) kill(path string) { s.source(path).dead = true }
