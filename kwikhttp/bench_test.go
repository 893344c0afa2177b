package kwikhttp_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/compare"
)

// BenchmarkHTTPWAN: 32 MiB over HTTP from servers behind 3 x 50 Mbit/s netsim links, at 10
// and 40 ms one way, three ways in every repetition: quic-go's http3 from one server,
// striping (an http3 server behind each link, a Range GET of a third of the object from each
// at once) and kwikhttp (a primary and two secondaries, one GET through http.Client). The
// first download each way, on fresh clients (connections opened, KWIK's secondaries joined,
// congestion windows at their start), is untimed and reported apart (first-*); the timed
// ones follow on the same clients. Then new clients each ask for 16 KiB, five times each way
// (new16k-*: the median, connection set-up included; kwikhttp's primary serves it alone):
//
//	go test -run '^$' -bench HTTPWAN -benchtime 1x ./kwikhttp
func BenchmarkHTTPWAN(b *testing.B) {
	for _, conf := range compare.HTTPSweep([]time.Duration{10 * time.Millisecond, 40 * time.Millisecond}) {
		b.Run(conf.Name(), func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			h, err := compare.NewHTTP(ctx, conf)
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			b.ResetTimer()
			r, err := h.Run(ctx, b.N)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(r.Mbps(r.HTTP3), "http3-Mbit/s")
			b.ReportMetric(r.Mbps(r.Stripe), "stripe-Mbit/s")
			b.ReportMetric(r.Mbps(r.KWIK), "kwikhttp-Mbit/s")
			b.ReportMetric(r.Stripe.Seconds()/r.KWIK.Seconds(), "kwikhttp/stripe")
			b.ReportMetric(r.HTTP3.Seconds()/r.KWIK.Seconds(), "kwikhttp/http3")
			b.ReportMetric(r.First.Stripe.Seconds()/r.First.KWIK.Seconds(), "first-kwikhttp/stripe")
			b.ReportMetric(r.First.HTTP3.Seconds()/r.First.KWIK.Seconds(), "first-kwikhttp/http3")
			// A new client's first small request (16 KiB), set-up included, each way: the
			// median of five.
			var h3s, kws []time.Duration
			for range 5 {
				h3, kw, err := h.FreshSmall(ctx, 16<<10)
				if err != nil {
					b.Fatal(err)
				}
				h3s, kws = append(h3s, h3), append(kws, kw)
			}
			slices.Sort(h3s)
			slices.Sort(kws)
			b.ReportMetric(float64(kws[2].Microseconds())/1e3, "new16k-kwikhttp-ms")
			b.ReportMetric(float64(h3s[2].Microseconds())/1e3, "new16k-http3-ms")
			b.ReportMetric(h3s[2].Seconds()/kws[2].Seconds(), "new16k-kwikhttp/http3")
			b.ReportMetric(0, "ns/op")
			b.Logf("shares: %s", r.SharesString())
		})
	}
}
