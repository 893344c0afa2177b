package compare

import (
	"context"
	"slices"
	"testing"
	"time"
)

// A small WAN scenario runs for real: every download arrives intact (Run checks each byte)
// and every field of the result is filled. Speeds are not asserted; BenchmarkWAN measures.
func TestWAN(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conf := WANConfig{Rates: []int64{100, 50}, Delay: 10 * time.Millisecond, Size: 2 << 20}
	w, err := NewWAN(ctx, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := w.Run(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: quic-go %.1f, striping %.1f, KWIK %.1f Mbit/s; shares %s; peak receive %d KiB",
		conf.Name(), r.Mbps(r.QUIC), r.Mbps(r.Stripe), r.Mbps(r.KWIK), r.SharesString(), r.PeakReceiveBuffered>>10)

	if r.QUIC <= 0 || r.Stripe <= 0 || r.RateStripe <= 0 || r.KWIK <= 0 {
		t.Errorf("times: quic-go %v, striping %v, by rate %v, KWIK %v", r.QUIC, r.Stripe, r.RateStripe, r.KWIK)
	}
	if r.Size != conf.Size || r.N != 1 || r.LinksMbit != 150 || !slices.Equal(r.Conf.Rates, conf.Rates) {
		t.Errorf("size %d, n %d, links %d Mbit/s, conf %+v", r.Size, r.N, r.LinksMbit, r.Conf)
	}
	for name, v := range map[string]float64{
		"kwik/quic": r.Ratio(), "kwik/stripe": r.StripeRatio(), "kwik/rate-stripe": r.RateStripeRatio(),
		"of-links-sum": r.OfLinksSum(),
	} {
		if !(v > 0) {
			t.Errorf("%s = %v", name, v)
		}
	}
	if r.PeakReceiveBuffered == 0 {
		t.Error("no peak receive memory")
	}
	var sum int64
	for i, s := range r.Shares {
		if (i == 0) != (s.Path == "") {
			t.Errorf("share %d is of path %q", i, s.Path)
		}
		sum += s.Bytes
	}
	if len(r.Shares) != len(conf.Rates) || sum != conf.Size {
		t.Errorf("shares %+v: want one a server, %d bytes in all", r.Shares, conf.Size)
	}
}

func TestWANConfig(t *testing.T) {
	sweep := WANSweep(WANDelays)
	var names []string
	for _, c := range sweep {
		names = append(names, c.Name())
	}
	want := []string{"3x50/10ms", "80+20+20/10ms", "1x200/10ms", "3x50/40ms", "80+20+20/40ms", "1x200/40ms",
		"3x50/100ms", "80+20+20/100ms", "1x200/100ms"}
	if !slices.Equal(names, want) {
		t.Errorf("sweep %q, want %q", names, want)
	}
	for _, bad := range []WANConfig{
		{Size: 1},
		{Rates: []int64{10, 0}, Size: 10},
		{Rates: []int64{10, 10}, Size: 1},
		{Rates: []int64{10}, Size: 10, Delay: -1},
	} {
		if w, err := NewWAN(context.Background(), bad); err == nil {
			w.Close()
			t.Errorf("%+v: no error", bad)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if w, err := NewWAN(ctx, WANConfig{Rates: []int64{10, 10}, Size: 10}); err == nil {
		w.Close()
		t.Error("NewWAN with a canceled context: no error")
	}
}

// Repetitions reuse the connections and sessions, a new stream each: past the 100 streams the
// peers allow open at once, every download's stream must have ended both ways.
func TestWANRepetitions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := NewWAN(ctx, WANConfig{Rates: []int64{500, 500}, Delay: time.Millisecond, Size: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := w.Run(ctx, 110)
	if err != nil {
		t.Fatal(err)
	}
	if r.RateStripe != 0 || r.RateStripeRatio() != 0 {
		t.Errorf("equal rates striped by rate too: %v", r.RateStripe)
	}
}

func TestSplitRanges(t *testing.T) {
	for _, c := range []struct {
		size    int64
		n       int
		weights []int64
		want    [][2]int64
	}{
		{size: 10, n: 3, want: [][2]int64{{0, 3}, {3, 3}, {6, 4}}},
		{size: 120, n: 3, weights: []int64{80, 20, 20}, want: [][2]int64{{0, 80}, {80, 20}, {100, 20}}},
		{size: 7, n: 2, weights: []int64{1, 100}, want: [][2]int64{{0, 0}, {0, 7}}},
		{size: 1000, n: 3, weights: []int64{1, 1, 1}, want: [][2]int64{{0, 333}, {333, 333}, {666, 334}}},
		{size: 1 << 62, n: 2, weights: []int64{3, 1}, want: [][2]int64{{0, 3 << 60}, {3 << 60, 1 << 60}}},
		{size: 5, n: 1, weights: []int64{7}, want: [][2]int64{{0, 5}}},
	} {
		if got := splitRanges(c.size, c.n, c.weights); !slices.Equal(got, c.want) {
			t.Errorf("splitRanges(%d, %d, %v) = %v, want %v", c.size, c.n, c.weights, got, c.want)
		}
	}
}
