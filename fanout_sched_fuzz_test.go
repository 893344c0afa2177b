package kwik

import (
	"testing"
	"time"
)

// FuzzFanoutScheduler runs the scheduler in the simulator (fanoutSim) on the fake clock over
// sizes, rates, round trips and latencies far from the benchmarks' (a byte to 64 MiB, 1 Mbit/s
// to 1 Gbit/s, up to seven secondaries, some failing at once, with or without the client's
// counters). The simulator fails on a scheduler that does not finish or waits with nothing
// under way, and on a copy that is not a piece's end; here every byte must also be assigned
// once, and the whole may take no longer than the primary alone would, plus the secondaries'
// latencies and the copies it sent:
//
//	go test -run '^$' -fuzz FuzzFanoutScheduler -fuzztime 1m .
func FuzzFanoutScheduler(f *testing.F) {
	f.Add(uint32(32<<20), uint16(80), []byte{80, 160, 20, 160, 20, 160}, uint8(0))
	f.Add(uint32(1), uint16(0), []byte{1, 0}, uint8(1))
	f.Add(uint32(8<<20), uint16(20), []byte{50, 40, 5, 200, 50, 40}, uint8(2))
	f.Add(uint32(3<<20), uint16(200), []byte{200, 255, 1, 255}, uint8(5))
	f.Fuzz(func(t *testing.T, size uint32, rttMs uint16, links []byte, flags uint8) {
		size = max(size%(64<<20), 1)
		rtt := time.Duration(rttMs%500) * time.Millisecond
		// links: the primary's rate, then a rate and a latency per secondary (1-7 of them),
		// rates in units of 4 Mbit/s (0: 1 Mbit/s), latencies in units of 4 ms, at least
		// half the primary's round trip (the delegation's trip through the client).
		if len(links) < 3 {
			return
		}
		n := min((len(links)-1)/2, 7)
		rate := func(b byte) float64 { return max(4*float64(b), 1) * mbit }
		rates := []float64{rate(links[0])}
		lats := make([]time.Duration, n)
		for i := range n {
			rates = append(rates, rate(links[1+2*i]))
			lats[i] = max(time.Duration(links[2+2*i])*4*time.Millisecond, rtt/2)
		}
		sim := newFanoutSim(t, int64(size), rtt, rates, lats)
		sim.noCounters = flags&1 != 0
		sim.fail = map[string]bool{}
		for i := range n {
			// Bits 1-7: the secondary fails its first delegation, and dies with it; never
			// all of them at once in most inputs, but that too must finish (the primary's).
			if flags&(2<<i) != 0 && i < 7 {
				sim.fail[string(rune('a'+i))] = true
			}
		}
		took := sim.run()

		var total int64
		for _, v := range sim.shares {
			total += v
		}
		if total != int64(size) {
			t.Fatalf("assigned %d bytes of %d: %v", total, size, sim.shares)
		}
		if sim.s.off != int64(size) {
			t.Fatalf("the scheduler stopped at %d of %d", sim.s.off, size)
		}
		// A bound no schedule should cross: the primary alone (and a tenth), plus twice the
		// slowest secondary's latency, plus what a secondary slower than bet costs: its
		// probe is given before anything measures it, as if it were as fast as the primary
		// (FanoutOptions; fanoutProbe), found slow after its assumed latency (twice the
		// primary's round trip), a round trip more and three rounds of decisions, and sent
		// again by the primary; plus what else was sent again, at the primary's rate.
		alone := dur(int64(size), rates[0]) + rtt
		var worst time.Duration
		for _, lat := range lats {
			worst = max(worst, 2*lat+alone/10+3*rtt+3*fanoutRound)
		}
		var slow int64 // probes of secondaries slower than the primary
		for _, r := range rates[1:] {
			if r < rates[0] {
				slow += fanoutProbe
			}
		}
		if limit := alone + worst + dur(slow+sim.dups, rates[0]); took > limit {
			t.Fatalf("took %v; the primary alone takes %v, the margin is %v, copies %d bytes; shares %v",
				took, alone, worst, sim.dups, sim.shares)
		}
	})
}
