package kwik

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/netsim"
	"github.com/quic-go/quic-go"
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

func link(mbit int64) netsim.Config {
	l := netsim.LinkConfig{Delay: 10 * time.Millisecond, RateBps: mbit * 1_000_000}
	return netsim.Config{Up: l, Down: l}
}

func benchMultiSource(b *testing.B, rates []int64, kill bool) {
	const size = multiSourceSize
	resource := make([]byte, size)
	for i := range resource {
		resource[i] = byte(rand.Uint32())
	}
	src := bytes.NewReader(resource)
	ctx := testContext(b)

	// Raw quic-go through one 40 Mbit/s link.
	stls := testTLS.server.Clone()
	stls.NextProtos = []string{"bench"}
	ctls := testTLS.client.Clone()
	ctls.NextProtos = []string{"bench"}
	// A Transport of our own, so that closing it ends every quic-go goroutine at once.
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	defer func() { tr.Close(); udp.Close() }()
	qln, err := tr.Listen(stls, nil)
	if err != nil {
		b.Fatal(err)
	}
	qr, err := netsim.NewRelay("127.0.0.1:0", qln.Addr().String(), link(40))
	if err != nil {
		b.Fatal(err)
	}
	defer qr.Close()

	// KWIK: the primary and each secondary behind a link of its own.
	conf := &Config{JoinKey: testJoinKey, StreamReceiveWindow: 8 << 20, HeartbeatInterval: 250 * time.Millisecond, PathTimeout: time.Second}
	ln := listen(b, conf)
	r := relay(b, ln, link(rates[0]))
	client, primary := dialVia(b, ln, r, conf)
	var ids []string
	var relays []*netsim.Relay
	var secs []*session
	for _, rate := range rates[1:] {
		sln := listen(b, conf)
		sr := relay(b, sln, link(rate))
		id, sec := addPath(b, primary, sln, sr.Addr().String())
		go ServeFanout(ctx, sec, src)
		ids, relays, secs = append(ids, id), append(relays, sr), append(secs, sec)
	}

	var qt, kt, stall time.Duration
	var shares map[string]int64
	b.ResetTimer()
	for range b.N {
		// quic-go
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			c, err := qln.Accept(ctx)
			if err != nil {
				done <- err
				return
			}
			defer c.CloseWithError(0, "")
			st, err := c.OpenStreamSync(ctx)
			if err != nil {
				done <- err
				return
			}
			st.Write(resource)
			st.Close()
			<-c.Context().Done() // the client closes when it has everything
			done <- nil
		}()
		qc, err := tr.Dial(ctx, qr.Addr(), ctls, nil)
		if err != nil {
			b.Fatal(err)
		}
		qs, err := qc.AcceptStream(ctx)
		if err != nil {
			b.Fatal(err)
		}
		got, err := io.ReadAll(qs)
		if err != nil || !bytes.Equal(got, resource) {
			b.Fatalf("quic-go download: %d bytes, %v", len(got), err)
		}
		qt += time.Since(start)
		qc.CloseWithError(0, "")
		<-done

		// KWIK
		start = time.Now()
		res := make(chan *FanoutResult, 1)
		go func() {
			st, err := primary.OpenStreamSync(ctx)
			if err != nil {
				b.Error(err)
				res <- nil
				return
			}
			fr, err := Fanout(ctx, st, src, size, ids, fanoutOpts)
			if err != nil {
				b.Error(err)
			}
			res <- fr
		}()
		cs, err := client.AcceptStream(ctx)
		if err != nil {
			b.Fatal(err)
		}
		got = got[:0]
		buf := make([]byte, 64<<10)
		last := time.Now()
		killed := false
		for {
			n, err := cs.Read(buf)
			if n > 0 {
				now := time.Now()
				if killed {
					stall = max(stall, now.Sub(last))
				}
				last = now
				got = append(got, buf[:n]...)
				if kill && !killed && len(got) > size/2 {
					relays[len(relays)-1].SetBlackhole(true)
					killed = true
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		kt += time.Since(start)
		if !bytes.Equal(got, resource) {
			b.Fatalf("KWIK download: %d bytes, not intact", len(got))
		}
		fr := <-res
		if fr != nil {
			shares = fr.Bytes
		}
	}
	b.StopTimer()
	if kill {
		// Let the dead path's connections finish closing, so that nothing outlives the run.
		relays[len(relays)-1].SetBlackhole(false)
		<-secs[len(secs)-1].Context().Done()
	}
	mbit := func(d time.Duration) float64 { return float64(size) * 8 * float64(b.N) / d.Seconds() / 1e6 }
	var sum int64
	for _, r := range rates {
		sum += r
	}
	b.ReportMetric(mbit(qt), "quic-Mbit/s")
	b.ReportMetric(mbit(kt), "kwik-Mbit/s")
	b.ReportMetric(qt.Seconds()/kt.Seconds(), "speedup")
	b.ReportMetric(mbit(kt)/float64(sum), "of-links-sum")
	if kill {
		b.ReportMetric(float64(stall.Milliseconds()), "ms-stall")
	}
	b.ReportMetric(0, "ns/op")
	var parts []string
	for _, id := range append([]string{""}, ids...) {
		name := id
		if name == "" {
			name = "primary"
		}
		parts = append(parts, fmt.Sprintf("%s=%.0f%%", name[:min(len(name), 7)], 100*float64(shares[id])/size))
	}
	b.Logf("shares: %s", strings.Join(parts, " "))
}

var fanoutOpts *FanoutOptions

// multiSourceSize is the resource BenchmarkMultiSource moves: large enough that QUIC's slow
// start and the first delegations' round trips weigh little.
const multiSourceSize = 48 << 20
