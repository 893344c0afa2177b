package kwik_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/compare"
)

// BenchmarkStaticSplit: the plain delegation API as the README shows it (1 MiB ranges assigned
// round robin to the primary and two secondaries, the primary writing its own, Close, Wait,
// WriteAt what failed), next to Fanout and raw quic-go over one link, in the same run, each
// server behind its own 40 Mbit/s netsim link, 10 and 40 ms one way, 24 MiB, default Config:
//
//	go test -run '^$' -bench StaticSplit -benchtime 1x .
func BenchmarkStaticSplit(b *testing.B) {
	for _, delay := range []time.Duration{10 * time.Millisecond, 40 * time.Millisecond} {
		b.Run(fmt.Sprintf("3x40/%v", delay), func(b *testing.B) {
			ctx := benchContext(b)
			s, err := compare.NewStaticSplit(ctx, compare.StaticConfig{
				Rates: []int64{40, 40, 40}, Delay: delay, Size: 24 << 20, Chunk: 1 << 20,
			})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ResetTimer()
			r, err := s.Run(ctx, b.N)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(r.Mbps(r.QUIC), "quic-Mbit/s")
			b.ReportMetric(r.Mbps(r.Fanout), "fanout-Mbit/s")
			b.ReportMetric(r.Mbps(r.KWIK), "static-Mbit/s")
			b.ReportMetric(r.FanoutRatio(), "fanout/quic")
			b.ReportMetric(r.Ratio(), "static/quic")
			b.ReportMetric(0, "ns/op")
			b.Logf("static shares: %s", r.SharesString())
		})
	}
}
