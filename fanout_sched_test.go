package kwik

import (
	"testing"
	"time"
)

// simSource is a secondary in the scheduler simulation: a pipe of rate bytes per second,
// whose delegations arrive after lat/2 and whose completions are known lat/2 after the last
// byte.
type simSource struct {
	rate float64
	lat  time.Duration
	busy time.Time // when its pipe is free
}

// simulateFanout runs the scheduler against simulated sources (the primary's rate first) on a
// fake clock, and returns what each served and when the last byte arrived.
func simulateFanout(t *testing.T, size int64, rtt time.Duration, rates []float64, lats []time.Duration, window int64) (shares map[string]int64, took time.Duration, firstOwn int64) {
	t.Helper()
	start := time.Unix(1000, 0)
	now := start
	paths := make([]string, len(rates)-1)
	srcs := map[string]*simSource{}
	for i := range paths {
		paths[i] = string(rune('a' + i))
		srcs[paths[i]] = &simSource{rate: rates[i+1], lat: lats[i], busy: start}
	}
	s := newFanoutScheduler(size, window, rtt, paths, &FanoutOptions{})
	type completion struct {
		path   string
		off, n int64
		at     time.Time
	}
	var pending []completion
	shares = map[string]int64{}
	end := start
	deliver := func(upTo time.Time) {
		for i := 0; i < len(pending); {
			if c := pending[i]; !c.at.After(upTo) {
				s.resolved(c.path, c.off, c.n, false, c.at)
				pending = append(pending[:i], pending[i+1:]...)
				continue
			}
			i++
		}
	}
	for steps := 0; ; steps++ {
		if steps > 1e6 {
			t.Fatal("scheduler does not finish")
		}
		deliver(now)
		off := s.off
		to, n := s.next()
		if n == 0 {
			break
		}
		shares[to] += n
		if to == "" {
			if off == 0 {
				firstOwn = n
			}
			d := time.Duration(float64(n) / rates[0] * float64(time.Second))
			now = now.Add(d)
			s.reserved(n)
			s.wrote(n, d, true)
			end = maxTime(end, now.Add(rtt/2))
			continue
		}
		src := srcs[to]
		s.delegated(to, n, now)
		startAt := maxTime(now.Add(src.lat/2), src.busy)
		src.busy = startAt.Add(time.Duration(float64(n) / src.rate * float64(time.Second)))
		end = maxTime(end, src.busy)
		pending = append(pending, completion{to, off, n, src.busy.Add(src.lat / 2)})
	}
	return shares, end.Sub(start), firstOwn
}

func TestFanoutScheduler(t *testing.T) {
	const mbit = 1e6 / 8
	for _, tc := range []struct {
		name   string
		size   int64
		rtt    time.Duration
		rates  []float64 // bytes per second, the primary's first
		lats   []time.Duration
		minSum float64 // the least fraction of the sum of the rates the schedule reaches
	}{
		{"3x50 at 10 ms", 32 << 20, 20 * time.Millisecond, []float64{50 * mbit, 50 * mbit, 50 * mbit}, []time.Duration{40 * time.Millisecond, 40 * time.Millisecond}, 0.9},
		{"3x50 at 100 ms", 32 << 20, 200 * time.Millisecond, []float64{50 * mbit, 50 * mbit, 50 * mbit}, []time.Duration{400 * time.Millisecond, 400 * time.Millisecond}, 0.7},
		{"80+20+20 at 40 ms", 32 << 20, 80 * time.Millisecond, []float64{80 * mbit, 20 * mbit, 20 * mbit}, []time.Duration{160 * time.Millisecond, 160 * time.Millisecond}, 0.85},
		{"20+80 at 40 ms", 32 << 20, 80 * time.Millisecond, []float64{20 * mbit, 80 * mbit}, []time.Duration{160 * time.Millisecond}, 0.85},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shares, took, first := simulateFanout(t, tc.size, tc.rtt, tc.rates, tc.lats, 32<<20)
			var sum float64
			for _, r := range tc.rates {
				sum += r
			}
			got := float64(tc.size) / took.Seconds() / sum
			t.Logf("%.0f%% of the rates' sum in %v; shares %v", 100*got, took, shares)
			if got < tc.minSum {
				t.Errorf("schedule reaches %.2f of the rates' sum, want at least %.2f", got, tc.minSum)
			}
			if first != fanoutFirstPiece {
				t.Errorf("the primary's first piece is %d bytes, want %d", first, fanoutFirstPiece)
			}
			for i, r := range tc.rates[1:] {
				p := string(rune('a' + i))
				want := float64(tc.size) * r / sum
				if float64(shares[p]) < 0.5*want {
					t.Errorf("secondary %s served %d bytes, want about %.0f", p, shares[p], want)
				}
			}
		})
	}
}

// A resource smaller than what the primary sends in the time a delegation takes is the
// primary's alone.
func TestFanoutSchedulerSmall(t *testing.T) {
	const mbit = 1e6 / 8
	shares, _, _ := simulateFanout(t, 1<<20, 200*time.Millisecond, []float64{50 * mbit, 50 * mbit, 50 * mbit}, []time.Duration{400 * time.Millisecond, 400 * time.Millisecond}, 16<<20)
	if shares[""] != 1<<20 {
		t.Fatalf("shares %v: a 1 MiB resource 100 ms away was delegated", shares)
	}
}

// A slow secondary far away gets little, and never a piece it would finish after the others
// have sent everything: the tail is not held up by it.
func TestFanoutSchedulerSlowTail(t *testing.T) {
	const mbit = 1e6 / 8
	shares, took, _ := simulateFanout(t, 16<<20, 20*time.Millisecond, []float64{100 * mbit, 2 * mbit}, []time.Duration{400 * time.Millisecond}, 16<<20)
	alone := time.Duration(float64(16<<20) / (100 * mbit) * float64(time.Second))
	if took > alone+alone/10 {
		t.Fatalf("took %v with a slow secondary, the primary alone takes %v; shares %v", took, alone, shares)
	}
}

// A secondary that fails gets nothing more; the others carry on.
func TestFanoutSchedulerFailure(t *testing.T) {
	s := newFanoutScheduler(8<<20, 16<<20, 10*time.Millisecond, []string{"a", "b"}, &FanoutOptions{})
	now := time.Unix(0, 0)
	to, n := s.next()
	if to != "" {
		t.Fatalf("first piece to %q", to)
	}
	s.reserved(n)
	s.wrote(n, time.Millisecond, true)
	seen := map[string]bool{}
	for range 10 {
		to, n := s.next()
		if to == "" {
			s.reserved(n)
			s.wrote(n, time.Millisecond, true)
			continue
		}
		seen[to] = true
		off := s.off
		s.delegated(to, n, now)
		if to == "a" {
			s.resolved("a", off, 0, true, now)
		}
	}
	for range 100 {
		to, n := s.next()
		if n == 0 {
			break
		}
		if to == "a" {
			t.Fatal("a failed secondary got another piece")
		}
		if to == "" {
			s.reserved(n)
			s.wrote(n, time.Millisecond, true)
		} else {
			s.delegated(to, n, now)
		}
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("secondaries used before the failure: %v", seen)
	}
}

// No piece is delegated past the client's credit: the primary's next write would wait on it.
func TestFanoutSchedulerCredit(t *testing.T) {
	s := newFanoutScheduler(8<<20, 16<<20, 10*time.Millisecond, []string{"a"}, &FanoutOptions{})
	to, n := s.next()
	s.reserved(n)
	s.wrote(n, time.Millisecond, true) // the first piece, the primary's
	if to != "" {
		t.Fatalf("first piece to %q", to)
	}
	s.credit = s.off + fanoutMinChunk - 1
	if to, _ := s.next(); to != "" {
		t.Fatalf("a piece past the credit went to %q", to)
	}
	s.credit = s.off + 4<<20
	if to, _ := s.next(); to != "a" {
		t.Fatalf("with credit the piece went to %q, want the secondary", to)
	}
}
