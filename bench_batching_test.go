package kwik_test

import (
	"testing"

	"github.com/kwik-go/kwik/internal/compare"
)

// BenchmarkBatching: 1,000 concurrent streams of 1 KiB each way, then 500 lone 1 KiB
// requests one after the other, on raw quic-go, KWIK, and KWIK with batching disabled, each
// over its own loopback connection:
//
//	go test -run '^$' -bench Batching -benchtime 3x .
//
// Reported per transport: streams per second in the burst, KWIK DataPackets and QUIC packets
// and bytes sent (both ends) for the burst, and a lone request's p50 and p99 round trip.
func BenchmarkBatching(b *testing.B) {
	ctx := benchContext(b)
	var sum compare.BatchingResult
	n := 0
	for b.Loop() {
		r, err := compare.Batching(ctx, compare.BatchingConfig{Streams: 1000, Size: 1 << 10, Requests: 500})
		if err != nil {
			b.Fatal(err)
		}
		sum.Conf = r.Conf
		for _, p := range []struct{ s, into *compare.BatchingSide }{{&r.QUIC, &sum.QUIC}, {&r.KWIK, &sum.KWIK}, {&r.KWIKUnbatched, &sum.KWIKUnbatched}} {
			p.into.Burst += p.s.Burst
			p.into.DataPackets += p.s.DataPackets
			p.into.QUICPackets += p.s.QUICPackets
			p.into.WireBytes += p.s.WireBytes
			p.into.P50 += p.s.P50
			p.into.P99 += p.s.P99
		}
		n++
	}
	for name, s := range map[string]compare.BatchingSide{"quic": sum.QUIC, "kwik": sum.KWIK, "unbatched": sum.KWIKUnbatched} {
		b.ReportMetric(float64(sum.Conf.Streams*n)/s.Burst.Seconds(), name+"-streams/s")
		b.ReportMetric(float64(s.QUICPackets)/float64(n), name+"-quic-packets")
		b.ReportMetric(float64(s.WireBytes)/float64(n), name+"-wire-bytes")
		b.ReportMetric(s.P50.Seconds()*1e6/float64(n), name+"-p50-µs")
		b.ReportMetric(s.P99.Seconds()*1e6/float64(n), name+"-p99-µs")
		if name != "quic" {
			b.ReportMetric(float64(s.DataPackets)/float64(n), name+"-datapackets")
		}
	}
}
