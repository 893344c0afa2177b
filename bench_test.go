package kwik_test

import (
	"context"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/compare"
)

// The benchmarks run raw quic-go and KWIK side by side in every iteration, over the same
// loopback, so their ratio means something on a noisy machine:
//
//	go test -run '^$' -bench . -benchtime 3x .
//
// Each reports MB/s (or streams/s) for both, kwik/quic, and heap allocations per 32 KiB moved
// for both (the difference is KWIK's own). The scenarios live in internal/compare, which
// `kwik bench` runs as well; these files are an external test package because compare
// imports kwik.

// benchContext returns a context that ends with the benchmark, bounded so a hung one fails.
func benchContext(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// loopback returns a raw quic-go pair and a KWIK one, closed when the benchmark ends.
func loopback(b *testing.B, maxStreams int) *compare.Loopback {
	l, err := compare.NewLoopback(benchContext(b), maxStreams)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(l.Close)
	return l
}

func benchTransfer(b *testing.B, dir compare.Direction) {
	const size = 256 << 20
	l := loopback(b, 100)
	ctx := benchContext(b)
	b.ResetTimer()
	r, err := l.Transfer(ctx, dir, size, b.N)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(r.MBps(r.QUIC), "quic-MB/s")
	b.ReportMetric(r.MBps(r.KWIK), "kwik-MB/s")
	b.ReportMetric(r.Ratio(), "kwik/quic")
	b.ReportMetric(r.AllocsPer32KiB(r.QUICMallocs), "quic-allocs/32KiB")
	b.ReportMetric(r.AllocsPer32KiB(r.KWIKMallocs), "kwik-allocs/32KiB")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkDownload256MiB: one stream, the server writes 256 MiB, the client reads.
func BenchmarkDownload256MiB(b *testing.B) { benchTransfer(b, compare.Download) }

// BenchmarkUpload256MiB: one stream, the client writes 256 MiB, the server reads.
func BenchmarkUpload256MiB(b *testing.B) { benchTransfer(b, compare.Upload) }

// BenchmarkConcurrentSmallStreams: 1,000 concurrent streams, 1 KiB request and response each.
func BenchmarkConcurrentSmallStreams(b *testing.B) {
	const n = 1000
	l := loopback(b, n)
	ctx := benchContext(b)
	b.ResetTimer()
	r, err := l.SmallStreams(ctx, n, b.N)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(r.PerSecond(r.QUIC), "quic-streams/s")
	b.ReportMetric(r.PerSecond(r.KWIK), "kwik-streams/s")
	b.ReportMetric(r.Ratio(), "kwik/quic")
	b.ReportMetric(0, "ns/op")
}
