package kwik_test

import (
	"testing"

	"github.com/kwik-go/kwik/internal/compare"
)

// BenchmarkSoak: 500 client sessions at once, each downloading 10 streams of 64 KiB at once,
// from one quic-go server and then from a KWIK primary and its secondary (Fanout), on
// loopback; every byte is checked. Heap and goroutines are per session, both ends counted (a
// KWIK session is a client, a primary and a secondary over two QUIC connections):
//
//	go test -run '^$' -bench Soak -benchtime 1x .
//
// TestSoak in internal/compare runs 50 sessions in CI.
func BenchmarkSoak(b *testing.B) {
	ctx := benchContext(b)
	for b.Loop() {
		r, err := compare.Soak(ctx, compare.SoakConfig{Sessions: 500, Streams: 10, StreamSize: 64 << 10})
		if err != nil {
			b.Fatal(err)
		}
		k, q := r.KWIK, r.QUIC
		b.ReportMetric(r.Mbps(k), "kwik-Mbit/s")
		b.ReportMetric(r.Mbps(q), "quic-Mbit/s")
		b.ReportMetric(k.P50.Seconds()*1e3, "kwik-p50-ms")
		b.ReportMetric(k.P99.Seconds()*1e3, "kwik-p99-ms")
		b.ReportMetric(q.P50.Seconds()*1e3, "quic-p50-ms")
		b.ReportMetric(q.P99.Seconds()*1e3, "quic-p99-ms")
		b.ReportMetric(k.HeapIdle/1024, "kwik-idle-KiB/session")
		b.ReportMetric(q.HeapIdle/1024, "quic-idle-KiB/conn")
		b.ReportMetric(k.HeapPeak/1024, "kwik-peak-KiB/session")
		b.ReportMetric(q.HeapPeak/1024, "quic-peak-KiB/conn")
		b.ReportMetric(k.Goroutines, "kwik-goroutines/session")
		b.ReportMetric(q.Goroutines, "quic-goroutines/conn")
		b.Logf("secondary share %.0f%%", 100*r.SecondaryShare)
	}
}
