package kwik_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/compare"
)

// BenchmarkWAN: the same object downloaded, in every repetition, by raw quic-go over one
// connection through a link as fast as the fastest server's, by striping (one quic-go
// connection to each server, each fetching an equal range at once) and by KWIK with its
// default configuration (Fanout from the primary and its secondaries), each server behind its
// own netsim link, at one-way delays of 10, 40 and 100 ms: 32 MiB from 3x50 Mbit/s and from
// 80+20+20 Mbit/s (the primary on the 80), 48 MiB from a single 200 Mbit/s server (no
// striping). With rates that differ, striping by rate (ranges in proportion to the links'
// rates, known in advance: an oracle's split) runs too, on connections of its own.
// peak-recv-MiB is the most the KWIK client's session held at once in received, unread bytes:
//
//	go test -run '^$' -bench WAN -benchtime 1x -timeout 30m .
func BenchmarkWAN(b *testing.B) {
	for _, conf := range compare.WANSweep(compare.WANDelays) {
		b.Run(conf.Name(), func(b *testing.B) { benchWAN(b, conf) })
	}
}

// BenchmarkGeneralCases: BenchmarkWAN's three ways off its cases, where a scheduler tuned on
// them could fail: smaller objects from 3x50 Mbit/s (every path in its slow start for most of
// the transfer), a slow primary beside a fast secondary (10+100, 20+80), a fast primary beside
// slow secondaries (100+10+10), 80+20+20 with half and twice the object (the slow starts'
// share of the time halves as the object doubles), and four servers (4x25), at 40 ms one way
// unless named:
//
//	go test -run '^$' -bench GeneralCases -benchtime 1x -timeout 30m .
func BenchmarkGeneralCases(b *testing.B) {
	const ms = time.Millisecond
	for _, conf := range []compare.WANConfig{
		{Rates: []int64{50, 50, 50}, Delay: 10 * ms, Size: 4 << 20},
		{Rates: []int64{50, 50, 50}, Delay: 40 * ms, Size: 4 << 20},
		{Rates: []int64{50, 50, 50}, Delay: 40 * ms, Size: 8 << 20},
		{Rates: []int64{50, 50, 50}, Delay: 40 * ms, Size: 16 << 20},
		{Rates: []int64{10, 100}, Delay: 40 * ms, Size: 32 << 20},
		{Rates: []int64{20, 80}, Delay: 40 * ms, Size: 32 << 20},
		{Rates: []int64{100, 10, 10}, Delay: 40 * ms, Size: 32 << 20},
		{Rates: []int64{80, 20, 20}, Delay: 40 * ms, Size: 16 << 20},
		{Rates: []int64{80, 20, 20}, Delay: 40 * ms, Size: 64 << 20},
		{Rates: []int64{25, 25, 25, 25}, Delay: 40 * ms, Size: 32 << 20},
	} {
		b.Run(fmt.Sprintf("%s/%dMiB", conf.Name(), conf.Size>>20), func(b *testing.B) { benchWAN(b, conf) })
	}
}

func benchWAN(b *testing.B, conf compare.WANConfig) {
	ctx := benchContext(b)
	w, err := compare.NewWAN(ctx, conf)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	b.ResetTimer()
	r, err := w.Run(ctx, b.N)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(r.Mbps(r.QUIC), "quic-Mbit/s")
	b.ReportMetric(r.Mbps(r.KWIK), "kwik-Mbit/s")
	b.ReportMetric(r.Ratio(), "kwik/quic")
	if r.Stripe > 0 {
		b.ReportMetric(r.Mbps(r.Stripe), "stripe-Mbit/s")
		b.ReportMetric(r.StripeRatio(), "kwik/stripe")
	}
	if r.RateStripe > 0 {
		b.ReportMetric(r.Mbps(r.RateStripe), "rate-stripe-Mbit/s")
		b.ReportMetric(r.RateStripeRatio(), "kwik/rate-stripe")
	}
	b.ReportMetric(r.OfLinksSum(), "of-links-sum")
	b.ReportMetric(float64(r.PeakReceiveBuffered)/(1<<20), "peak-recv-MiB")
	b.ReportMetric(0, "ns/op")
	b.Logf("shares: %s", r.SharesString())
}
