package compare

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/internal/selfsigned"
)

// WANConfig describes a WAN scenario.
type WANConfig struct {
	Rates []int64       // Mbit/s of each KWIK server's link, the primary's first
	Delay time.Duration // one-way delay of every link
	Size  int64         // bytes downloaded in each repetition
}

// Name names the scenario by its links and delay: "3x50/40ms" for three links of 50 Mbit/s
// and a one-way delay of 40 ms.
func (c WANConfig) Name() string { return c.Links() + "/" + c.Delay.String() }

// Links names the links' rates in Mbit/s: "3x50" for three of 50, "80+20+20" for rates that
// differ.
func (c WANConfig) Links() string {
	if slices.Min(c.Rates) == slices.Max(c.Rates) {
		return fmt.Sprintf("%dx%d", len(c.Rates), c.Rates[0])
	}
	rates := make([]string, len(c.Rates))
	for i, r := range c.Rates {
		rates[i] = fmt.Sprint(r)
	}
	return strings.Join(rates, "+")
}

// WANDelays are the one-way delays of the WAN sweep.
var WANDelays = []time.Duration{10 * time.Millisecond, 40 * time.Millisecond, 100 * time.Millisecond}

// WANSweep returns the scenarios of the WAN sweep for each one-way delay, in order: 32 MiB
// from three servers of 50 Mbit/s, 32 MiB from three of 80, 20 and 20 Mbit/s (the primary on
// the 80), and 48 MiB from a single server of 200 Mbit/s.
func WANSweep(delays []time.Duration) []WANConfig {
	var out []WANConfig
	for _, d := range delays {
		out = append(out,
			WANConfig{Rates: []int64{50, 50, 50}, Delay: d, Size: 32 << 20},
			WANConfig{Rates: []int64{80, 20, 20}, Delay: d, Size: 32 << 20},
			WANConfig{Rates: []int64{200}, Delay: d, Size: 48 << 20},
		)
	}
	return out
}

// WAN downloads the same object three ways, each server behind its own netsim link:
//
//   - quic-go: one connection through a link as fast as the fastest server's, on which the
//     server opens a stream and writes the object;
//   - striping, what one would write instead of KWIK (only with several servers): one quic-go
//     connection to each server, through its link, and on each at once a stream on which the
//     client asks for an equal range of the object ("offset,length"; the last range takes the
//     remainder) and the server writes it;
//   - striping by rate (only when the servers' rates differ): the same, with each range in
//     proportion to its server's link rate, so that every range would end at once if each
//     connection ran at its link's rate from the start. No client knows the rates in advance:
//     this is striping given an oracle, the best a client of quic-go connections can split the
//     object, and the yardstick for what is left to gain once every link's congestion control
//     is the same;
//   - KWIK with the default configuration (only the JoinKey set): with one server, the
//     primary opens a stream and writes the object; with several, it serves the stream with
//     kwik.Fanout from itself and its secondaries, which run kwik.ServeFanout.
//
// Connections and sessions are set up once and reused by every repetition, each download on a
// new stream; a download's time runs from the stream's opening (striping: the first request's)
// to the arrival of the last byte. Striping thus pays the requests' one-way delay, which the
// other two, written by the server as the clock starts, do not. Its methods must not run
// concurrently.
type WAN struct {
	conf     WANConfig
	resource []byte
	closers  closers
	serving  sync.WaitGroup // the striping servers
	// quic-go: both ends of the connection through the fastest link.
	quic struct{ client, server *quic.Conn }
	// striping: the client's connection to each server; none with a single server.
	stripes []*quic.Conn
	// striping by rate: connections of their own, as new as the others' at the first download
	// (the second download on warm connections would gain a round trip or more of slow start).
	rateStripes []*quic.Conn
	kwik        *kwikSources
}

// wanQUICConfig keeps the quic-go connections alive while the other downloads run (quic-go's
// idle timeout is 30 s); it changes nothing else from quic-go's defaults.
var wanQUICConfig = &quic.Config{KeepAlivePeriod: 5 * time.Second}

// NewWAN starts the servers and their links and connects every client.
func NewWAN(ctx context.Context, conf WANConfig) (_ *WAN, err error) {
	if len(conf.Rates) == 0 || conf.Size < int64(len(conf.Rates)) || conf.Delay < 0 {
		return nil, errors.New("compare: WAN needs rates, a size of at least a byte per server, and a delay")
	}
	if err := positive(conf.Rates); err != nil {
		return nil, fmt.Errorf("compare: WAN: %w", err)
	}
	w := &WAN{conf: conf, resource: newResource(conf.Size)}
	w.closers.add(w.serving.Wait) // last: closing the connections ends the serving
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	serverTLS, clientTLS, err := selfsigned.New()
	if err != nil {
		return nil, err
	}
	stls, ctls := benchTLS(serverTLS, clientTLS)

	q, err := newQUICLink(stls, linkConfig(slices.Max(conf.Rates), conf.Delay), &w.closers)
	if err != nil {
		return nil, err
	}
	if w.quic.client, w.quic.server, err = q.connect(ctx, ctls, wanQUICConfig, &w.closers); err != nil {
		return nil, err
	}
	if len(conf.Rates) > 1 {
		if w.stripes, err = w.stripingClients(ctx, stls, ctls); err != nil {
			return nil, err
		}
	}
	if slices.Min(conf.Rates) != slices.Max(conf.Rates) {
		if w.rateStripes, err = w.stripingClients(ctx, stls, ctls); err != nil {
			return nil, err
		}
	}

	key := make([]byte, 32)
	rand.Read(key)
	w.kwik, err = newKWIKSources(ctx, &kwik.Config{JoinKey: key}, serverTLS, clientTLS,
		links(conf.Rates, conf.Delay), bytes.NewReader(w.resource), &w.closers)
	return w, err
}

// stripingClients starts a range server behind a link of its own for each of the scenario's
// rates and returns the client's connection to each.
func (w *WAN) stripingClients(ctx context.Context, stls, ctls *tls.Config) ([]*quic.Conn, error) {
	var clients []*quic.Conn
	for _, link := range links(w.conf.Rates, w.conf.Delay) {
		q, err := newQUICLink(stls, link, &w.closers)
		if err != nil {
			return nil, err
		}
		client, server, err := q.connect(ctx, ctls, wanQUICConfig, &w.closers)
		if err != nil {
			return nil, err
		}
		w.serving.Go(func() { serveRanges(ctx, server, w.resource, &w.serving) })
		clients = append(clients, client)
	}
	return clients, nil
}

// Close closes every connection, session, server and link.
func (w *WAN) Close() { w.closers.run() }

// WANResult is the outcome of WAN.Run.
type WANResult struct {
	Downloads               // quic-go's and KWIK's times, and who served KWIK's last download
	Conf      WANConfig     // the scenario
	Stripe    time.Duration // striping's time in total over the repetitions; 0 with one server
	// RateStripe is striping by rate's time in total over the repetitions; 0 unless the
	// servers' rates differ.
	RateStripe time.Duration
	// PeakReceiveBuffered is the most memory the KWIK client's session held at once for bytes
	// received and not yet read (kwik.SessionStats), over all the repetitions.
	PeakReceiveBuffered uint64
}

// StripeRatio is KWIK's speed relative to striping's: above 1, KWIK was faster. 0 without
// striping.
func (r WANResult) StripeRatio() float64 {
	if r.Stripe == 0 {
		return 0
	}
	return r.Stripe.Seconds() / r.KWIK.Seconds()
}

// RateStripeRatio is KWIK's speed relative to striping by rate's: above 1, KWIK was faster. 0
// without it.
func (r WANResult) RateStripeRatio() float64 {
	if r.RateStripe == 0 {
		return 0
	}
	return r.RateStripe.Seconds() / r.KWIK.Seconds()
}

// Run downloads the object n times over, each time with quic-go, then striping, then striping
// by rate, then KWIK, and checks that every byte arrived intact.
func (w *WAN) Run(ctx context.Context, n int) (WANResult, error) {
	r := WANResult{Downloads: newDownloads(w.conf.Size, n, w.conf.Rates), Conf: w.conf}
	var last *kwik.FanoutResult
	for range n {
		t, err := w.quicDownload(ctx)
		if err != nil {
			return r, fmt.Errorf("quic-go download: %w", err)
		}
		r.QUIC += t
		if len(w.stripes) > 0 {
			t, err := w.stripe(ctx, w.stripes, nil)
			if err != nil {
				return r, fmt.Errorf("striped download: %w", err)
			}
			r.Stripe += t
		}
		if len(w.rateStripes) > 0 {
			t, err := w.stripe(ctx, w.rateStripes, w.conf.Rates)
			if err != nil {
				return r, fmt.Errorf("download striped by rate: %w", err)
			}
			r.RateStripe += t
		}
		t, fr, err := w.kwik.download(ctx, w.resource, w.serve, nil)
		if err != nil {
			return r, fmt.Errorf("KWIK download: %w", err)
		}
		r.KWIK += t
		last = fr
	}
	r.setShares(last, w.kwik.ids)
	r.PeakReceiveBuffered = w.kwik.client.Stats().PeakReceiveBuffered
	return r, nil
}

func (w *WAN) quicDownload(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- push(ctx, w.quic.server, w.resource) }() // a failed Write ends with the connection
	st, err := w.quic.client.AcceptStream(ctx)
	if err != nil {
		return 0, err
	}
	if err := receive(st, w.resource, nil); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	st.Close() // the stream ends both ways, so that it no longer counts against the client's limit
	return elapsed, <-done
}

// stripe fetches a range of the object from each server of clients at once: equal ranges
// with weights nil, otherwise ranges in proportion to weights, one a server.
func (w *WAN) stripe(ctx context.Context, clients []*quic.Conn, weights []int64) (time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	ranges := splitRanges(w.conf.Size, len(clients), weights)
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		off, n := ranges[i][0], ranges[i][1]
		wg.Go(func() {
			if errs[i] = fetch(ctx, c, w.resource, off, n); errs[i] != nil {
				cancel() // the other ranges will not help
			}
		})
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// splitRanges cuts size bytes into n consecutive ranges, {offset, length} each: equal ones
// with weights nil, otherwise in proportion to weights (n of them, positive). The last range
// takes what rounding leaves.
func splitRanges(size int64, n int, weights []int64) [][2]int64 {
	if weights == nil {
		weights = slices.Repeat([]int64{1}, n)
	}
	var total int64
	for _, w := range weights[:n] {
		total += w
	}
	out := make([][2]int64, n)
	var off, cum int64
	for i := range n {
		cum += weights[i]
		end := size
		if i < n-1 {
			end = size/total*cum + size%total*cum/total
		}
		out[i] = [2]int64{off, end - off}
		off = end
	}
	return out
}

// fetch asks the server at the other end of c for bytes [off, off+n) of resource on a new
// stream, and checks them.
func fetch(ctx context.Context, c *quic.Conn, resource []byte, off, n int64) error {
	st, err := c.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	defer context.AfterFunc(ctx, func() { st.CancelRead(0) })()
	if _, err := fmt.Fprintf(st, "%d,%d", off, n); err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	if err := receive(st, resource[off:off+n], nil); err != nil {
		return fmt.Errorf("range %d+%d: %w", off, n, err)
	}
	return nil
}

// serveRanges answers every stream the client opens on c with the bytes of resource that its
// request "offset,length" names, until the connection or ctx ends.
func serveRanges(ctx context.Context, c *quic.Conn, resource []byte, serving *sync.WaitGroup) {
	for {
		st, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		serving.Go(func() {
			req, err := io.ReadAll(io.LimitReader(st, 64))
			var off, n int64
			if err == nil {
				_, err = fmt.Sscanf(string(req), "%d,%d", &off, &n)
			}
			if err != nil || off < 0 || n < 0 || off > int64(len(resource))-n {
				st.CancelRead(1)
				st.CancelWrite(1)
				return
			}
			st.Write(resource[off : off+n]) // fails only when the client gives up
			st.Close()
		})
	}
}

// serve serves a KWIK download on the primary's stream st: with Fanout when there are
// secondaries, otherwise by writing the object.
func (w *WAN) serve(ctx context.Context, st kwik.Stream) (*kwik.FanoutResult, error) {
	if len(w.kwik.ids) == 0 {
		if _, err := st.Write(w.resource); err != nil {
			return nil, err
		}
		return nil, st.Close()
	}
	return kwik.Fanout(ctx, st, bytes.NewReader(w.resource), w.conf.Size, w.kwik.ids, nil)
}
