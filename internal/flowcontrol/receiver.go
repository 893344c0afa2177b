// Package flowcontrol is the receive flow control of one KWIK logical stream: how much credit
// the receiver grants its senders, when, and how the window grows. It does no I/O and takes no
// lock (its owner serialises the calls, under the stream's receive lock) and reads no clock:
// every call that needs the time is given it, so that its behaviour can be tested on a fake
// clock, as quic-go tests its own window auto-tuning.
//
// A logical stream may be fed by several paths at once (the primary's own bytes and the ranges
// delegated to secondaries), each with its own round trip. Credit granted to the stream is one
// absolute offset that every sender obeys, so the window must cover the bytes in flight on all
// of them: rate × RTT summed over the paths, which is the total rate times the paths' RTTs
// weighted by what each delivered. The window grows as quic-go's does (doubling when the reader
// consumed half of it in less than a few RTTs) with that weighted RTT, and does not grow when
// the reader spent the epoch blocked at a gap with half the window buffered above it: a source
// slower than the others holds the reader there, and more credit would only buy bytes it cannot
// read yet.
package flowcontrol

import "time"

// updateThreshold is the fraction of the window consumed before more credit is granted, as in
// quic-go (protocol.WindowUpdateThreshold).
const updateThreshold = 0.25

// MinGrant is the least credit worth announcing, unless the senders have none left.
const MinGrant = 16 << 10

// Budget lends credit beyond a stream's initial window from what all the session's streams
// share (the session's receive bound).
type Budget interface {
	// Exchange takes back returned and lends up to need more if at least least is left;
	// otherwise it lends nothing (and may remember the stream, to serve it later).
	Exchange(returned, need, least uint64) (lent uint64)
	// Pressed says whether the budget runs low: windows then grow only with what was read.
	Pressed() bool
}

// Receiver is the receive window of one logical stream, fed by sources of type K (the paths).
// The zero value is not usable: use NewReceiver (its result may be embedded by value).
type Receiver[K comparable] struct {
	initial  uint64 // credit held without borrowing from the budget
	size     uint64 // current window: credit kept ahead of the reads
	max      uint64 // the window's cap
	limit    uint64 // credit granted: senders may send bytes below it
	borrowed uint64 // credit beyond initial, lent by the budget
	read     uint64 // the reader's offset
	highest  uint64 // the highest offset received
	grownAt  time.Time
	home     K
	rttOf    func(K) time.Duration

	// Auto-tuning epoch: when it began, the read offset then, time the reader spent blocked
	// at a gap with data above it, and the bytes each source delivered.
	epochStart  time.Time
	epochOffset uint64
	gapSince    time.Time // zero unless the reader is blocked at a gap now
	gapTime     time.Duration
	sources     []delivered[K]
}

type delivered[K comparable] struct {
	src K
	n   uint64
}

// maxSources bounds the sources an epoch remembers (a session has few paths).
const maxSources = 16

// NewReceiver returns a receiver whose window starts at initial and grows up to maxSize; the
// senders' credit starts at initial. home is the stream's own source, whose RTT counts until
// another delivers; rtt gives a source's smoothed round trip (0 if unknown).
func NewReceiver[K comparable](initial, maxSize uint64, home K, rtt func(K) time.Duration, now time.Time) Receiver[K] {
	return Receiver[K]{
		initial: initial, size: initial, max: max(maxSize, initial), limit: initial,
		home: home, rttOf: rtt, epochStart: now,
	}
}

// Limit is the credit granted so far: the offset below which senders may send.
func (r *Receiver[K]) Limit() uint64 { return r.limit }

// Size is the current window.
func (r *Receiver[K]) Size() uint64 { return r.size }

// Borrowed is the credit lent by the budget that the stream holds.
func (r *Receiver[K]) Borrowed() uint64 { return r.borrowed }

// AtLeast raises the window to n (within its cap), as when another source starts feeding the
// stream: credit follows at the next Update.
func (r *Receiver[K]) AtLeast(n uint64) { r.size = max(r.size, min(n, r.max)) }

// Cover raises the credit to end when the reader cannot read on before every byte below end
// has arrived (a block it may read only once all of it is there and checked): Update alone
// may leave less credit ahead of a reader that does not move than such a block needs. end
// must lie within the initial window of the reader, which the stream holds without
// borrowing, so unread data stays within the usual bound; otherwise Cover does nothing. It
// returns the new limit to announce, or 0.
func (r *Receiver[K]) Cover(end uint64) uint64 {
	if end <= r.limit || end-min(end, r.read) > r.initial {
		return 0
	}
	r.limit = end
	return r.limit
}

// Arrived records that bytes up to end have arrived (duplicates included).
func (r *Receiver[K]) Arrived(end uint64) { r.highest = max(r.highest, end) }

// Received records n bytes newly delivered by src (duplicates excluded).
func (r *Receiver[K]) Received(src K, n uint64) {
	for i := range r.sources {
		if r.sources[i].src == src {
			r.sources[i].n += n
			return
		}
	}
	if len(r.sources) < maxSources {
		r.sources = append(r.sources, delivered[K]{src, n})
	}
}

// Blocked records that the reader found nothing to read at now, with above bytes buffered
// above its offset. It waits at a gap that holds the window up when those bytes fill half the
// window: a source slower than the others is holding the reader, and the window is not what
// limits it.
func (r *Receiver[K]) Blocked(now time.Time, above uint64) {
	if above >= r.size/2 {
		if r.gapSince.IsZero() {
			r.gapSince = now
		}
	} else {
		r.unblock(now)
	}
}

// unblock ends a wait at a gap.
func (r *Receiver[K]) unblock(now time.Time) {
	if !r.gapSince.IsZero() {
		r.gapTime += now.Sub(r.gapSince)
		r.gapSince = time.Time{}
	}
}

// Read records that the reader has reached offset off at now.
func (r *Receiver[K]) Read(off uint64, now time.Time) {
	r.unblock(now)
	r.read = max(r.read, off)
}

// RTT is the round trip the window must cover: the sources' RTTs weighted by what each
// delivered in the epoch (the bytes in flight on each are its rate times its RTT), or the
// home source's when none did.
func (r *Receiver[K]) RTT() time.Duration {
	var sum float64
	var total uint64
	for _, s := range r.sources {
		if s.n == 0 {
			continue
		}
		sum += float64(s.n) * float64(r.rttOf(s.src))
		total += s.n
	}
	if total == 0 {
		return r.rttOf(r.home)
	}
	return time.Duration(sum / float64(total))
}

// Update settles the loan with the budget and, once a quarter of the window has been read,
// grants more credit (growing the window first if the reads went fast). done says that no
// more credit is needed (the final size is known and covered, or the stream ended). It
// returns the new limit to announce, or 0.
func (r *Receiver[K]) Update(now time.Time, done bool, b Budget) uint64 {
	off := r.read
	out := r.limit - min(r.limit, off) // credit the senders have not used up, or we have not read
	own := r.initial
	returned := r.borrowed - min(r.borrowed, sat(out, own))
	r.borrowed -= returned
	var want uint64
	if !done && float64(out) <= float64(r.size)*(1-updateThreshold) {
		pressed := b.Pressed()
		if !pressed {
			r.maybeGrow(now)
		}
		window := r.size
		if pressed {
			// Half the budget is lent: a window grows only with what the application has
			// read of the stream, so that streams read a little, then left, do not hold the
			// budget the streams being read need.
			window = min(window, max(own, 2*off))
		}
		want = sat(off+window, r.limit)
	}
	need := sat(sat(out+want, own), r.borrowed)
	if returned == 0 && need == 0 && want == 0 {
		return 0
	}
	least := uint64(1) // senders with no credit left take whatever there is
	if out > 0 {
		least = sat(min(want, MinGrant), want-need)
	}
	lent := b.Exchange(returned, need, least)
	// What the stream's own initial window covers is granted even when the budget lends
	// nothing, so unread data stays within the budget plus the initial windows.
	ext := want - (need - lent)
	if ext == 0 || (out > 0 && ext < min(want, MinGrant)) {
		return 0
	}
	r.borrowed += lent
	r.limit += ext
	return r.limit
}

// maybeGrow doubles the window if the reader consumed more than half of it in less than 4
// RTTs' worth of that fraction, and the reader did not spend half the epoch waiting at a gap.
// It starts a new epoch once half the window has been read.
func (r *Receiver[K]) maybeGrow(now time.Time) {
	inEpoch := r.read - r.epochOffset
	if inEpoch <= r.size/2 {
		return
	}
	elapsed := now.Sub(r.epochStart)
	gap := r.gapTime
	if !r.gapSince.IsZero() {
		gap += now.Sub(r.gapSince)
	}
	fraction := float64(inEpoch) / float64(r.size)
	rtt := r.RTT()
	// The senders used up all the credit: the window is what limits them, however slowly
	// the reads went (a stream fed by several paths waits for the slowest trip before it can
	// read fast). Once per round trip, like the doubling of a slow start.
	starved := r.highest+MinGrant >= r.limit && now.Sub(r.grownAt) >= rtt
	if rtt > 0 && (elapsed < time.Duration(4*fraction*float64(rtt)) || starved) && gap <= elapsed/2 && r.size < r.max {
		r.size = min(2*r.size, r.max)
		r.grownAt = now
	}
	r.epochStart, r.epochOffset, r.gapTime = now, r.read, 0
	if !r.gapSince.IsZero() {
		r.gapSince = now
	}
	clear(r.sources)
	r.sources = r.sources[:0]
}

// End gives the loan back when the stream takes no more data, and returns it.
func (r *Receiver[K]) End() (returned uint64) {
	returned, r.borrowed = r.borrowed, 0
	return returned
}

func sat(a, b uint64) uint64 { return a - min(a, b) }
