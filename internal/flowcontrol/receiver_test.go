package flowcontrol

import (
	"math/rand/v2"
	"testing"
	"time"
)

// budget is a session budget of max bytes.
type budget struct {
	max, lent uint64
	refused   int
}

func (b *budget) Exchange(returned, need, least uint64) uint64 {
	b.lent -= min(returned, b.lent)
	left := b.max - min(b.lent, b.max)
	if g := min(need, left); g > 0 && g >= least {
		b.lent += g
		return g
	}
	if need > 0 {
		b.refused++
	}
	return 0
}

func (b *budget) Pressed() bool { return b.lent > b.max/2 }

const (
	kib = 1 << 10
	mib = 1 << 20
)

// reader drives a Receiver the way a stream does: the senders fill the credit at once, the
// application reads step bytes every interval, and each read asks for an update.
type reader struct {
	t      *testing.T
	r      *Receiver[string]
	b      *budget
	now    time.Time
	off    uint64
	grants int
}

func newReader(t *testing.T, initial, maxSize uint64, rtts map[string]time.Duration, b *budget) *reader {
	now := time.Unix(1000, 0)
	rtt := func(p string) time.Duration { return rtts[p] }
	r := NewReceiver(initial, maxSize, "primary", rtt, now)
	return &reader{t: t, r: &r, b: b, now: now}
}

// read reads n bytes (no more than the credit) at now + dt, as delivered by src.
func (rd *reader) read(src string, n uint64, dt time.Duration) {
	rd.t.Helper()
	rd.now = rd.now.Add(dt)
	n = min(n, rd.r.Limit()-rd.off)
	if n == 0 {
		rd.t.Fatalf("no credit left at offset %d (limit %d)", rd.off, rd.r.Limit())
	}
	rd.r.Received(src, n)
	rd.off += n
	rd.r.Read(rd.off, rd.now)
	if l := rd.r.Update(rd.now, false, rd.b); l > 0 {
		rd.grants++
		if l > rd.off+rd.r.max {
			rd.t.Fatalf("credit %d is more than the maximum window %d ahead of the reads at %d", l, rd.r.max, rd.off)
		}
	}
}

func TestReceiverAutoTuning(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rtt      time.Duration
		interval time.Duration // per 16 KiB read
		total    uint64
		want     uint64 // the window at the end
	}{
		// 16 KiB per 10 µs is 1.6 GB/s: at 10 ms RTT the window must reach its cap.
		{"fast reader grows to the cap", 10 * time.Millisecond, 10 * time.Microsecond, 64 * mib, 16 * mib},
		// 16 KiB per 10 ms is 1.6 MB/s: 16 KiB per RTT fits the initial window many times.
		{"slow reader keeps the initial window", 10 * time.Millisecond, 10 * time.Millisecond, 8 * mib, 512 * kib},
		// 200 Mbit/s at 80 ms RTT: the bandwidth-delay product is 2 MB; the window ends
		// at the first doubling past four times it, as quic-go's rule does.
		{"window follows bandwidth-delay", 80 * time.Millisecond, 655 * time.Microsecond, 64 * mib, 8 * mib},
		// Without an RTT sample, nothing to tune with.
		{"no RTT, no growth", 0, 10 * time.Microsecond, 8 * mib, 512 * kib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := newReader(t, 512*kib, 16*mib, map[string]time.Duration{"primary": tc.rtt}, &budget{max: 32 * mib})
			for rd.off < tc.total {
				rd.read("primary", 16*kib, tc.interval)
			}
			if got := rd.r.Size(); got != tc.want {
				t.Fatalf("window %d KiB, want %d KiB", got/kib, tc.want/kib)
			}
		})
	}
}

func TestReceiverGrantsAQuarterAtATime(t *testing.T) {
	rd := newReader(t, 1*mib, 1*mib, map[string]time.Duration{"primary": time.Millisecond}, &budget{max: 32 * mib})
	for range 64 { // 1 MiB in 16 KiB reads: an update after each quarter of the window
		rd.read("primary", 16*kib, time.Second)
	}
	if rd.grants != 4 {
		t.Fatalf("%d grants for one window read slowly, want 4", rd.grants)
	}
	if got := rd.r.Limit(); got != 2*mib {
		t.Fatalf("limit %d, want 2 MiB", got)
	}
}

func TestReceiverWeightedRTT(t *testing.T) {
	rtts := map[string]time.Duration{"primary": 20 * time.Millisecond, "near": 20 * time.Millisecond, "far": 200 * time.Millisecond}
	for _, tc := range []struct {
		name      string
		delivered map[string]uint64
		want      time.Duration
	}{
		{"nothing delivered: the stream's own path", nil, 20 * time.Millisecond},
		{"one source", map[string]uint64{"far": 100}, 200 * time.Millisecond},
		{"by bytes", map[string]uint64{"primary": 450, "near": 450, "far": 100}, 38 * time.Millisecond},
		{"equal", map[string]uint64{"near": 1, "far": 1}, 110 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReceiver(64*kib, mib, "primary", func(p string) time.Duration { return rtts[p] }, time.Unix(0, 0))
			for src, n := range tc.delivered {
				r.Received(src, n)
			}
			if got := r.RTT(); got != tc.want {
				t.Fatalf("RTT %v, want %v", got, tc.want)
			}
		})
	}
}

// TestReceiverFarSourceNeedsMore: the same read rate needs a larger window when a far path
// delivers most of it.
func TestReceiverFarSourceNeedsMore(t *testing.T) {
	rtts := map[string]time.Duration{"primary": 20 * time.Millisecond, "far": 200 * time.Millisecond}
	size := func(src string) uint64 {
		rd := newReader(t, 512*kib, 64*mib, rtts, &budget{max: 128 * mib})
		for rd.off < 96*mib {
			rd.read(src, 16*kib, 650*time.Microsecond) // 200 Mbit/s
		}
		return rd.r.Size()
	}
	near, far := size("primary"), size("far")
	if far < 4*near {
		t.Fatalf("window %d KiB with the far path delivering, %d KiB with the near one: want at least 4x", far/kib, near/kib)
	}
}

// TestReceiverNoGrowthAtAGap: a reader that spends its epochs waiting at a gap with half the
// window buffered above it does not grow the window, however fast it then reads.
func TestReceiverNoGrowthAtAGap(t *testing.T) {
	for _, tc := range []struct {
		name  string
		above uint64 // bytes buffered above the gap, as a fraction of the window: n/8
		grow  bool
	}{
		{"half the window buffered above", 4, false},
		{"a little buffered above", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := newReader(t, 512*kib, 16*mib, map[string]time.Duration{"primary": 50 * time.Millisecond}, &budget{max: 32 * mib})
			for range 40 {
				// Wait 30 ms at a gap, then read a quarter of the window at once: a window
				// every 120 ms is fast for a 50 ms RTT.
				rd.r.Blocked(rd.now, rd.r.Size()*tc.above/8)
				rd.read("primary", rd.r.Size()/4, 30*time.Millisecond)
			}
			if grew := rd.r.Size() > 512*kib; grew != tc.grow {
				t.Fatalf("window %d KiB: grew %v, want %v", rd.r.Size()/kib, grew, tc.grow)
			}
		})
	}
}

// TestReceiverBudget: under pressure a window grows only with what was read; when the budget
// lends nothing, the initial window is still granted; End gives the loan back.
func TestReceiverBudget(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		b := &budget{max: 0}
		rd := newReader(t, 256*kib, 16*mib, map[string]time.Duration{"primary": 10 * time.Millisecond}, b)
		for rd.off < 8*mib {
			rd.read("primary", 16*kib, 10*time.Microsecond)
			if ahead := rd.r.Limit() - rd.off; ahead > 256*kib {
				t.Fatalf("%d KiB of credit ahead with nothing lent, want at most the initial 256 KiB", ahead/kib)
			}
		}
		if rd.r.Borrowed() != 0 || b.refused == 0 {
			t.Fatalf("borrowed %d, refused %d", rd.r.Borrowed(), b.refused)
		}
	})
	t.Run("pressed", func(t *testing.T) {
		b := &budget{max: 32 * mib, lent: 20 * mib} // other streams hold most of it
		rd := newReader(t, 64*kib, 16*mib, map[string]time.Duration{"primary": 10 * time.Millisecond}, b)
		rd.r.size = 16 * mib // grown earlier
		rd.read("primary", 32*kib, time.Millisecond)
		if ahead := rd.r.Limit() - rd.off; ahead > 64*kib {
			t.Fatalf("%d KiB ahead after reading 32 KiB under pressure, want at most 64 KiB", ahead/kib)
		}
	})
	t.Run("end", func(t *testing.T) {
		b := &budget{max: 32 * mib}
		rd := newReader(t, 64*kib, 16*mib, map[string]time.Duration{"primary": 10 * time.Millisecond}, b)
		for rd.off < 4*mib {
			rd.read("primary", 16*kib, 10*time.Microsecond)
		}
		if b.lent == 0 || b.lent != rd.r.Borrowed() {
			t.Fatalf("budget lent %d, stream borrowed %d", b.lent, rd.r.Borrowed())
		}
		b.Exchange(rd.r.End(), 0, 0)
		if b.lent != 0 || rd.r.Borrowed() != 0 {
			t.Fatalf("after End: budget lent %d, stream borrowed %d", b.lent, rd.r.Borrowed())
		}
	})
}

// TestReceiverInvariants: whatever the reads, delays, gaps and budget, the credit stays within
// the maximum window ahead of the reads, the loan within the budget, and the window between
// its initial size and its cap.
func TestReceiverInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		b := &budget{max: uint64(rng.IntN(8)) * mib}
		initial := uint64(16+rng.IntN(512)) * kib
		maxSize := initial * uint64(1+rng.IntN(32))
		rtts := map[string]time.Duration{"primary": time.Duration(rng.IntN(200)) * time.Millisecond, "s": time.Duration(rng.IntN(200)) * time.Millisecond}
		rd := newReader(t, initial, maxSize, rtts, b)
		for range 500 {
			if rng.IntN(4) == 0 {
				rd.r.Blocked(rd.now, uint64(rng.IntN(int(rd.r.Size()+1))))
			}
			src := "primary"
			if rng.IntN(2) == 0 {
				src = "s"
			}
			rd.read(src, uint64(1+rng.IntN(int(rd.r.Size()))), time.Duration(rng.IntN(20000))*time.Microsecond)
			if s := rd.r.Size(); s < initial || s > maxSize {
				t.Fatalf("case %d: window %d outside [%d, %d]", i, s, initial, maxSize)
			}
			if rd.r.Borrowed() != b.lent || b.lent > b.max {
				t.Fatalf("case %d: borrowed %d, budget lent %d of %d", i, rd.r.Borrowed(), b.lent, b.max)
			}
		}
	}
}

// TestReceiverStarvedSenders: senders that use up all the credit show that the window is what
// limits them, even when the reads come slowly (a stream fed by far paths reads in bursts):
// the window doubles, at most once per round trip; senders that leave credit unused do not
// grow it.
func TestReceiverStarvedSenders(t *testing.T) {
	for _, tc := range []struct {
		name    string
		starved bool
		want    uint64
	}{
		{"credit used up", true, 8 * mib},
		{"credit left", false, 512 * kib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := newReader(t, 512*kib, 8*mib, map[string]time.Duration{"primary": 50 * time.Millisecond}, &budget{max: 32 * mib})
			for range 200 {
				if tc.starved {
					rd.r.Arrived(rd.r.Limit())
				}
				// A quarter of the window every 200 ms: slow for a 50 ms RTT.
				rd.read("primary", rd.r.Size()/4, 200*time.Millisecond)
			}
			if got := rd.r.Size(); got != tc.want {
				t.Fatalf("window %d KiB, want %d KiB", got/kib, tc.want/kib)
			}
		})
	}
}

func TestReceiverAtLeast(t *testing.T) {
	r := NewReceiver(256*kib, 4*mib, "primary", func(string) time.Duration { return 0 }, time.Unix(0, 0))
	r.AtLeast(1 * mib)
	if r.Size() != 1*mib {
		t.Fatalf("window %d after AtLeast(1 MiB)", r.Size())
	}
	r.AtLeast(64 * mib)
	if r.Size() != 4*mib {
		t.Fatalf("window %d after AtLeast beyond the cap, want the cap", r.Size())
	}
	r.AtLeast(64 * kib)
	if r.Size() != 4*mib {
		t.Fatalf("AtLeast shrank the window to %d", r.Size())
	}
}

// A reader that waits for a whole block before it reads on (a digest-checked one) gets credit
// for the block, whatever Update left it, once the block lies within the initial window of the
// reader: the credit then stays within what the stream holds without borrowing.
func TestCoverBlockAheadOfTheReader(t *testing.T) {
	b := &budget{}
	rd := newReader(t, 64*kib, 4*mib, map[string]time.Duration{"primary": 10 * time.Millisecond}, b)
	r := rd.r
	if got := r.Cover(80 * kib); got != 0 {
		t.Fatalf("Cover past the initial window of the reader = %d, want 0", got)
	}
	r.Read(20*kib, rd.now) // no Update: the credit is still the initial window
	if got := r.Cover(80 * kib); got != 80*kib || r.Limit() != 80*kib {
		t.Fatalf("Cover = %d, limit %d, want the block's end", got, r.Limit())
	}
	if got := r.Cover(70 * kib); got != 0 || r.Limit() != 80*kib {
		t.Fatalf("Cover below the limit = %d, limit %d", got, r.Limit())
	}
	if got := r.Cover(20*kib + 64*kib + 1); got != 0 {
		t.Fatalf("Cover one byte past the initial window = %d, want 0", got)
	}
	if b.lent != 0 {
		t.Fatalf("Cover borrowed %d", b.lent)
	}
}
