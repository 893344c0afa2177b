package kwik

import "time"

// fanoutScheduler decides, for Fanout, who serves each next piece of a resource: the primary
// itself or one of the secondaries. It is free of I/O and of the clock (every method is given
// the time), so it is tested without sockets.
//
// Fanout writes the stream in order: Delegate reserves the next bytes, so the primary cannot
// delegate past a piece it has not written yet. Each round it asks next for the piece at the
// current offset. The rules:
//   - The first piece is the primary's (time to first byte is that of one server), and so is
//     everything while the resource is small enough that no secondary could finish a piece
//     before all the sources together would have sent the whole rest (ECF's end game).
//   - A secondary is kept busy: its outstanding bytes may reach its measured rate × (its
//     delegation latency plus one round of the primary's own writing), with a margin; no fixed
//     count caps it.
//   - Among secondaries with room, the piece goes to the one expected to finish it first
//     (ECF): max(latency, outstanding / rate) + piece / rate. Skipped: a secondary that would
//     complete it only after all the sources together should have sent everything; one whose
//     queue would hold it back longer than the reader's lead plus a delegation's trip (the
//     reader would wait at a gap); and one whose piece would keep the reader waiting so long
//     that the others would fill the credit the client grants meanwhile (BLEST's blocking
//     estimate). Nor does any secondary get a piece past the credit the client grants: the
//     primary's own next piece would then wait for the reader, which waits for the
//     secondaries.
//   - Otherwise the primary writes a small piece itself and asks again.
//
// Estimates: the primary's rate is what its own writes achieved; a secondary's rate is the
// bytes its completed delegations brought over the time they took, on a sliding window of
// completions; a secondary's latency is the least time a delegation took beyond its transfer
// (the trip primary → client → secondary and the notice back), starting from two round trips
// of the primary's path.
type fanoutScheduler struct {
	size   int64 // bytes to serve
	off    int64 // next byte to assign
	window int64 // the client's maximum stream receive window
	chunk  int64 // fixed piece size for secondaries; 0: adaptive
	count  int   // fixed cap on a secondary's outstanding delegations; 0: none
	rtt    time.Duration
	credit int64 // the client's credit for the stream, in the resource's offsets; <0: unknown

	own struct {
		bytes int64
		busy  time.Duration // time spent in Write
	}
	ownQueued int64 // bytes the primary took and has not written yet
	secs      []*fanoutSource
	delivered int64 // bytes known to be at the client: the primary's and completed delegations'
}

// fanoutSource is one secondary as the scheduler sees it.
type fanoutSource struct {
	path        string
	dead        bool
	outstanding int64 // bytes delegated and not yet resolved
	pieces      []fanoutPiece
	lat         time.Duration // least delegation latency beyond transfer; 0: none measured
	lastDone    time.Time     // the latest completion
	samples     []fanoutSample
	window      []fanoutDone // recent completions
	rate        float64      // bytes per second; 0 until measured
}

type fanoutPiece struct {
	off, n      int64
	at          time.Time
	outstanding int64 // the source's outstanding bytes when assigned, this piece included
}

// fanoutDone is a completed piece: when it was assigned, and what it delivered.
type fanoutDone struct {
	at    time.Time
	bytes int64
}

// fanoutSample is one completion: n bytes that kept the source's pipe busy for d.
type fanoutSample struct {
	n int64
	d time.Duration
}

const (
	fanoutFirstPiece = 64 << 10           // written by the primary before anything is delegated
	fanoutOwnPiece   = 64 << 10           // the primary's pieces: short, so it looks for a free secondary often
	fanoutOwnQueue   = 4 * fanoutOwnPiece // the primary's own bytes queued for its writer
	fanoutMinChunk   = 64 << 10
	fanoutMaxChunk   = 1 << 20
	fanoutRateWindow = 8         // completions the rate is measured over
	fanoutProbe      = 256 << 10 // outstanding on a secondary until its rate is known
	// fanoutDefaultRate is assumed for a source not measured yet: 40 Mbit/s.
	fanoutDefaultRate = 5e6
)

func newFanoutScheduler(size, window int64, rtt time.Duration, paths []string, o *FanoutOptions) *fanoutScheduler {
	s := &fanoutScheduler{size: size, window: max(window, 1<<20), chunk: o.ChunkSize, count: o.MaxInFlight, rtt: rtt, credit: -1}
	for _, p := range paths {
		s.secs = append(s.secs, &fanoutSource{path: p})
	}
	return s
}

// ownRate is the primary's measured rate, in bytes per second.
func (s *fanoutScheduler) ownRate() float64 {
	if s.own.busy <= 0 || s.own.bytes < fanoutOwnPiece {
		return fanoutDefaultRate
	}
	return float64(s.own.bytes) / s.own.busy.Seconds()
}

// rateOf is a secondary's rate, or the primary's until measured.
func (s *fanoutScheduler) rateOf(src *fanoutSource) float64 {
	if src.rate > 0 {
		return src.rate
	}
	return s.ownRate()
}

// latOf is a secondary's delegation latency.
func (s *fanoutScheduler) latOf(src *fanoutSource) time.Duration {
	if src.lat > 0 {
		return src.lat
	}
	return max(2*s.rtt, time.Millisecond)
}

// chunkFor is the size of the next piece for src: a quarter of what covers its latency.
func (s *fanoutScheduler) chunkFor(src *fanoutSource) int64 {
	if s.chunk > 0 {
		return s.chunk
	}
	if src.rate == 0 {
		return fanoutMinChunk
	}
	n := int64(s.rateOf(src) * s.latOf(src).Seconds() / 4)
	return min(max(n, fanoutMinChunk), fanoutMaxChunk) &^ (16<<10 - 1)
}

// capOf is how many bytes src may have outstanding: its rate over its latency plus one round
// of the primary's writing, with half again as margin, and two pieces.
func (s *fanoutScheduler) capOf(src *fanoutSource, n int64) int64 {
	round := time.Duration(float64(fanoutOwnPiece) / s.ownRate() * float64(time.Second))
	return int64(2*s.rateOf(src)*(s.latOf(src)+round).Seconds()) + 3*n
}

// next says who serves the piece at the current offset: a secondary's path and the piece's
// length, or "" and the length the primary writes itself. It returns n == 0 when everything
// is assigned.
func (s *fanoutScheduler) next() (path string, n int64) {
	rest := s.size - s.off
	if rest <= 0 {
		return "", 0
	}
	if s.off == 0 {
		if s.chunk > 0 {
			return "", min(rest, s.chunk)
		}
		return "", min(rest, fanoutFirstPiece)
	}
	total := s.ownRate()
	for _, src := range s.secs {
		if !src.dead {
			total += s.rateOf(src)
		}
	}
	// When everything should be at the client if every source keeps its pace.
	end := float64(rest) / total
	for _, src := range s.secs {
		end += float64(src.outstanding) / total
	}
	var best *fanoutSource
	var bestEta float64
	for _, src := range s.secs {
		if src.dead {
			continue
		}
		piece := min(s.chunkFor(src), rest)
		limit := s.capOf(src, piece)
		if src.rate == 0 {
			// Until a first piece tells its rate, a secondary gets little: it may be slow.
			limit = max(fanoutProbe, piece)
		}
		if s.count > 0 && len(src.pieces) >= s.count || src.outstanding+piece > limit {
			continue
		}
		// Within the credit the client grants: past it, the primary's own next piece would
		// wait for the reader, which waits for the secondaries.
		if s.chunk == 0 && s.credit >= 0 && s.off+piece > s.credit {
			continue
		}
		rate := s.rateOf(src)
		// The piece arrives after the delegation's trip, or once the secondary's queue has
		// drained if that takes longer (a busy pipe hides the trip).
		eta := max(s.latOf(src).Seconds(), float64(src.outstanding)/rate) + float64(piece)/rate
		others := total - rate
		// ECF's end game: a piece this secondary would deliver only after all the sources
		// together should have sent everything is better left to the others.
		if s.chunk == 0 && eta > end+float64(piece)/total {
			continue
		}
		// The reader reaches this piece once what comes before it is in, at the sources'
		// pace: a secondary whose queue would hold the piece back longer than that plus a
		// delegation's trip would keep the reader at a gap (a slow secondary's queue stays
		// within its share).
		before := s.off - s.delivered
		if s.chunk == 0 && float64(src.outstanding)/rate > float64(before)/total+s.latOf(src).Seconds() {
			continue
		}
		// BLEST: while the reader waits for this piece (from when it has read what comes
		// before, at the sources' full rate), the others would fill the window.
		wait := eta - float64(before)/total
		if s.chunk == 0 && wait > 0 && others*wait > float64(s.room()-before-piece) {
			continue
		}
		if best == nil || eta < bestEta {
			best, bestEta = src, eta
		}
	}
	if best == nil {
		return "", min(rest, fanoutOwnPiece)
	}
	return best.path, min(s.chunkFor(best), rest)
}

// room is the window the pieces in flight may span: the client's maximum window, but no more
// than twice the window it grants now (a window doubles at most once per round of reads), so
// that delegations do not run so far past the credit that the primary's own writes wait on it.
func (s *fanoutScheduler) room() int64 {
	if s.credit < 0 {
		return s.window
	}
	return min(s.window, 2*max(s.credit-s.delivered, 0)+fanoutMaxChunk)
}

// reserved records that the primary takes the n bytes at the current offset, to write them
// itself (they are queued until wrote).
func (s *fanoutScheduler) reserved(n int64) {
	s.off += n
	s.ownQueued += n
}

// ownBusy says whether the primary has enough of its own bytes queued to keep its pipe full
// until the next decision.
func (s *fanoutScheduler) ownBusy() bool { return s.ownQueued >= fanoutOwnQueue }

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
	src := s.source(path)
	src.outstanding += n
	src.pieces = append(src.pieces, fanoutPiece{off: s.off, n: n, at: now, outstanding: src.outstanding})
	s.off += n
}

// resolved records the outcome of the delegation of path at off: delivered bytes of it reached
// the client (all of them unless failed), known at now. A failed secondary gets no more.
func (s *fanoutScheduler) resolved(path string, off, delivered int64, failed bool, now time.Time) {
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
	// The pipe carried this piece from when it reached the secondary (or the previous piece
	// was done, if later) until now: its rate over the last completions, with pieces served
	// at once adding up, is the source's rate.
	lat := s.latOf(src)
	busy := now.Sub(maxTime(p.at.Add(lat), src.lastDone))
	busy = max(busy, time.Millisecond)
	src.lastDone = maxTime(src.lastDone, now)
	src.samples = append(src.samples, fanoutSample{n: delivered, d: busy})
	if len(src.samples) > fanoutRateWindow {
		src.samples = src.samples[1:]
	}
	var n int64
	var d time.Duration
	for _, sm := range src.samples {
		n, d = n+sm.n, d+sm.d
	}
	src.rate = float64(n) / d.Seconds()
	// Pieces a secondary serves at once complete close together, which makes their busy
	// times look short: the rate is also held to a quarter more than the bytes of the last
	// completions over the time from when the first of them could start (its assignment plus
	// the latency) to now. That cannot overestimate a busy pipe; the quarter lets a source
	// held back by its cap show more.
	src.window = append(src.window, fanoutDone{at: p.at, bytes: delivered})
	if len(src.window) > fanoutRateWindow {
		src.window = src.window[1:]
	}
	if len(src.window) >= 2 {
		var bytes int64
		start := now
		for _, w := range src.window {
			bytes += w.bytes
			start = minTime(start, w.at)
		}
		if el := now.Sub(start.Add(lat)).Seconds(); el > 0 {
			src.rate = min(src.rate, 1.5*float64(bytes)/el)
		}
	}
	// The latency: what a delegation made to an idle secondary took beyond its transfer
	// (with others outstanding, their transfer times blur it).
	if p.outstanding == p.n {
		took := now.Sub(p.at) - time.Duration(float64(p.n)/src.rate*float64(time.Second))
		took = max(took, time.Millisecond)
		if src.lat == 0 || took < src.lat {
			src.lat = took
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
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

// kill stops giving path work (it died, or Delegate refused it).
func (s *fanoutScheduler) kill(path string) { s.source(path).dead = true }
