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

	if r.QUIC <= 0 || r.Stripe <= 0 || r.KWIK <= 0 {
		t.Errorf("times: quic-go %v, striping %v, KWIK %v", r.QUIC, r.Stripe, r.KWIK)
	}
	if r.Size != conf.Size || r.N != 1 || r.LinksMbit != 150 || !slices.Equal(r.Conf.Rates, conf.Rates) {
		t.Errorf("size %d, n %d, links %d Mbit/s, conf %+v", r.Size, r.N, r.LinksMbit, r.Conf)
	}
	for name, v := range map[string]float64{
		"kwik/quic": r.Ratio(), "kwik/stripe": r.StripeRatio(), "of-links-sum": r.OfLinksSum(),
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
	if _, err := w.Run(ctx, 110); err != nil {
		t.Fatal(err)
	}
}
