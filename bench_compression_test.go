package kwik_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/compare"
)

// BenchmarkCompression: 16 MiB of JSON log lines, then 16 MiB of random bytes, downloaded
// through one 40 Mbit/s, 10 ms netsim link with raw quic-go, KWIK, and KWIK with
// Config.Compression on both sides:
//
//	go test -run '^$' -bench Compression -benchtime 1x .
//
// Reported per case: goodput in Mbit/s, QUIC bytes on the wire per byte of data, and the
// process's CPU time per MB (both ends and the emulated link together).
func BenchmarkCompression(b *testing.B) {
	ctx := benchContext(b)
	const size = 16 << 20
	for b.Loop() {
		cases, err := compare.Compression(ctx, compare.CompressionConfig{Size: size, RateMbit: 40, Delay: 10 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range cases {
			name := c.Data + "-" + strings.ToLower(strings.ReplaceAll(c.Transport, "+", "-"))
			b.ReportMetric(c.Mbps(size), name+"-Mbit/s")
			b.ReportMetric(float64(c.WireBytes)/size, name+"-wire/byte")
			b.ReportMetric(float64(c.CPUPerMB(size).Microseconds())/1000, name+"-cpu-ms/MB")
		}
	}
}
