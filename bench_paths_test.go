package kwik

import (
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/netsim"
)

// BenchmarkPathLifecycle measures, through netsim links with 20 ms one-way delay on every
// path, the time from AddPath to an active path and from a secondary's death (blackholed)
// to the primary's knowing it:
//
//	go test -run '^$' -bench PathLifecycle -benchtime 5x .
func BenchmarkPathLifecycle(b *testing.B) {
	delay := netsim.Config{Up: netsim.LinkConfig{Delay: 20 * time.Millisecond}, Down: netsim.LinkConfig{Delay: 20 * time.Millisecond}}
	conf := &Config{JoinKey: testJoinKey, HeartbeatInterval: 250 * time.Millisecond, PathTimeout: time.Second}
	ln := listen(b, conf)
	r := relay(b, ln, delay)
	client, primary := dialVia(b, ln, r, conf)
	var add, notice time.Duration
	b.ResetTimer()
	for range b.N {
		sln := listen(b, conf)
		sr := relay(b, sln, delay)
		start := time.Now()
		id, _ := addPath(b, primary, sln, sr.Addr().String())
		add += time.Since(start)

		start = time.Now()
		sr.SetBlackhole(true)
		for {
			if _, ok := pathByID(primary.GetDeadPaths(), id); ok {
				break
			}
			time.Sleep(time.Millisecond)
		}
		notice += time.Since(start)
		sln.Close()
	}
	b.StopTimer()
	_ = client
	b.ReportMetric(add.Seconds()*1000/float64(b.N), "ms-addpath")
	b.ReportMetric(notice.Seconds()*1000/float64(b.N), "ms-death-notice")
	b.ReportMetric(float64(conf.PathTimeout.Milliseconds()), "ms-PathTimeout")
	b.ReportMetric(float64(conf.HeartbeatInterval.Milliseconds()), "ms-heartbeat")
	b.ReportMetric(0, "ns/op")
}
