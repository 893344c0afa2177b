package kwik_test

import (
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/compare"
)

// BenchmarkMultiSource: one client downloads one stream served by the primary and its
// secondaries with Fanout, each server behind its own netsim link (rate as named, 10 ms one
// way), side by side with raw quic-go downloading the same bytes from one server through one
// 40 Mbit/s link:
//
//	go test -run '^$' -bench MultiSource -benchtime 1x .
func BenchmarkMultiSource(b *testing.B) {
	for _, tc := range []struct {
		name  string
		rates []int64 // Mbit/s, the primary's first
		kill  bool    // blackhole the last secondary half way
	}{
		{"1x40", []int64{40}, false},
		{"2x40", []int64{40, 40}, false},
		{"3x40", []int64{40, 40, 40}, false},
		{"4x40", []int64{40, 40, 40, 40}, false},
		{"40+10", []int64{40, 10}, false},
		{"3x40-kill", []int64{40, 40, 40}, true},
	} {
		b.Run(tc.name, func(b *testing.B) { benchMultiSource(b, tc.rates, tc.kill) })
	}
}

// multiSourceSize is the resource BenchmarkMultiSource moves: large enough that QUIC's slow
// start and the first delegations' round trips weigh little.
const multiSourceSize = 48 << 20

func benchMultiSource(b *testing.B, rates []int64, kill bool) {
	ctx := benchContext(b)
	m, err := compare.NewMultiSource(ctx, compare.MultiSourceConfig{
		Rates: rates, QUICRate: 40, Delay: 10 * time.Millisecond, Size: multiSourceSize, Kill: kill,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	b.ResetTimer()
	r, err := m.Run(ctx, b.N)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(r.Mbps(r.QUIC), "quic-Mbit/s")
	b.ReportMetric(r.Mbps(r.KWIK), "kwik-Mbit/s")
	b.ReportMetric(r.Ratio(), "speedup")
	b.ReportMetric(r.OfLinksSum(), "of-links-sum")
	if kill {
		b.ReportMetric(float64(r.Stall.Milliseconds()), "ms-stall")
	}
	b.ReportMetric(0, "ns/op")
	b.Logf("shares: %s", r.SharesString())
}
