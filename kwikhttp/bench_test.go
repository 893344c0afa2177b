package kwikhttp_test

import (
	"context"
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
// ones follow on the same clients:
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
			b.ReportMetric(0, "ns/op")
			b.Logf("shares: %s", r.SharesString())
		})
	}
}
