package compare

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/internal/netsim"
	"github.com/kwik-go/kwik/internal/selfsigned"
	"github.com/kwik-go/kwik/kwikhttp"
)

// HTTPConfig describes an HTTP scenario: servers behind links of these rates (Mbit/s, the
// primary's first), each with the same one-way delay, serving an object of Size bytes.
type HTTPConfig struct {
	Rates []int64
	Delay time.Duration
	Size  int64
}

// Name is the scenario's links and delay, as WANConfig's: "3x50/40ms".
func (c HTTPConfig) Name() string { return WANConfig{Rates: c.Rates, Delay: c.Delay}.Name() }

// HTTPSweep is the HTTP benchmark's scenarios: 32 MiB from three servers of 50 Mbit/s, at
// each one-way delay.
func HTTPSweep(delays []time.Duration) []HTTPConfig {
	var out []HTTPConfig
	for _, d := range delays {
		out = append(out, HTTPConfig{Rates: []int64{50, 50, 50}, Delay: d, Size: 32 << 20})
	}
	return out
}

// HTTP downloads the same object over HTTP three ways, every server behind its own netsim
// link and answering with http.ServeContent (kwikhttp.ServeContent):
//
//   - http3: quic-go's own HTTP/3 (github.com/quic-go/quic-go/http3), one GET from one server
//     through a link as fast as the fastest;
//   - striping: an http3 server behind each link, and at once on each a GET with a Range for
//     an equal part of the object (what aria2-style downloaders do);
//   - kwikhttp: a kwikhttp primary with the others as its secondaries, and one GET through an
//     http.Client with kwikhttp.Transport; the primary fans the body out.
//
// NewHTTP downloads the object once each way (HTTPResult.First): fresh clients, so that
// download opens the connections (quic-go's handshakes; KWIK's, and its secondaries' joins
// at the first large response) and starts every congestion window from its initial size. The
// timed downloads of Run follow on the same clients, as a long-lived client's: every
// connection and path has carried its share of one download (the same for all three ways;
// a warm-up of a Range request each would leave KWIK's secondaries, which join at the first
// large response and then carry its pieces, colder than the striping connections). Each
// download is timed from the request to the body's last byte. Its methods must not run
// concurrently.
type HTTP struct {
	conf     HTTPConfig
	resource []byte
	closers  closers

	h3      *http3.Transport
	h3URL   string   // the one-link server
	stripes []string // a URL per striping server
	kwikTr  *kwikhttp.Transport
	kwikURL string
	// What a fresh client of each way is made of (FreshSmall).
	h3TLS, kwikTLS *tls.Config
	kwikConf       *kwik.Config
	fanouts        chan *kwik.FanoutResult
	lastKWIK       *kwik.FanoutResult
	first          HTTPTimes
}

// NewHTTP starts the servers and their links.
func NewHTTP(ctx context.Context, conf HTTPConfig) (_ *HTTP, err error) {
	if len(conf.Rates) < 2 || conf.Size < 2<<20 || conf.Delay < 0 {
		return nil, errors.New("compare: HTTP needs two rates or more, 2 MiB or more and a delay")
	}
	if err := positive(conf.Rates); err != nil {
		return nil, fmt.Errorf("compare: HTTP: %w", err)
	}
	h := &HTTP{conf: conf, resource: newResource(conf.Size), fanouts: make(chan *kwik.FanoutResult, 64)}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	serverTLS, clientTLS, err := selfsigned.New()
	if err != nil {
		return nil, err
	}
	modtime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kwikhttp.ServeContent(w, r, "object", modtime, bytes.NewReader(h.resource), int64(len(h.resource)))
	})

	// quic-go's http3: one server through the fastest link, and one behind each link.
	h3TLS := http3.ConfigureTLSConfig(serverTLS.Clone())
	addr, err := newH3Server(h3TLS, handler, linkConfig(maxRate(conf.Rates), conf.Delay), &h.closers)
	if err != nil {
		return nil, err
	}
	h.h3URL = "https://" + addr + "/object"
	for _, link := range links(conf.Rates, conf.Delay) {
		addr, err := newH3Server(h3TLS, handler, link, &h.closers)
		if err != nil {
			return nil, err
		}
		h.stripes = append(h.stripes, "https://"+addr+"/object")
	}
	h3Client := clientTLS.Clone()
	h3Client.NextProtos = []string{http3.NextProtoH3}
	h.h3 = &http3.Transport{TLSClientConfig: h3Client}
	h.closers.add(func() { h.h3.Close() })
	h.h3TLS = h3Client

	// kwikhttp: the primary behind the first link, its secondaries behind the others.
	key := make([]byte, 32)
	rand.Read(key)
	conf0 := &kwik.Config{JoinKey: key}
	var secondaries []string
	var serving sync.WaitGroup
	h.closers.add(serving.Wait)
	for _, link := range links(conf.Rates, conf.Delay)[1:] {
		ln, r, err := kwikServer(serverTLS, conf0, link, &h.closers)
		if err != nil {
			return nil, err
		}
		srv := &kwikhttp.Server{Handler: handler}
		serving.Go(func() { srv.Serve(ln) })
		h.closers.add(func() { srv.Close() })
		secondaries = append(secondaries, r.Addr().String())
	}
	ln, r, err := kwikServer(serverTLS, conf0, links(conf.Rates, conf.Delay)[0], &h.closers)
	if err != nil {
		return nil, err
	}
	primary := &kwikhttp.Server{Handler: handler, Secondaries: secondaries, OnFanout: func(_ *http.Request, res *kwik.FanoutResult, _ error) {
		select {
		case h.fanouts <- res:
		default:
		}
	}}
	serving.Go(func() { primary.Serve(ln) })
	h.closers.add(func() { primary.Close() })
	h.kwikTr = &kwikhttp.Transport{TLSClientConfig: clientTLS, Config: conf0}
	h.kwikTLS, h.kwikConf = clientTLS, conf0
	h.closers.add(func() { h.kwikTr.Close() })
	h.kwikURL = "https://" + r.Addr().String() + "/object"

	if h.first, err = h.round(ctx); err != nil {
		return nil, fmt.Errorf("first download: %w", err)
	}
	h.awaitFanout(ctx) // or Run could take this one for its own
	return h, nil
}

// newH3Server starts an http3 server behind a link and returns the link's address.
func newH3Server(tlsConf *tls.Config, handler http.Handler, link netsim.Config, cl *closers) (string, error) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return "", err
	}
	tr := &quic.Transport{Conn: udp}
	cl.add(func() { tr.Close(); udp.Close() })
	ln, err := tr.ListenEarly(tlsConf, nil)
	if err != nil {
		return "", err
	}
	srv := &http3.Server{Handler: handler}
	done := make(chan struct{})
	go func() { defer close(done); srv.ServeListener(ln) }()
	cl.add(func() { srv.Close(); ln.Close(); <-done })
	r, err := netsim.NewRelay("127.0.0.1:0", ln.Addr().String(), link)
	if err != nil {
		return "", err
	}
	cl.add(func() { r.Close() })
	return r.Addr().String(), nil
}

func maxRate(rates []int64) int64 {
	m := rates[0]
	for _, r := range rates {
		m = max(m, r)
	}
	return m
}

// fetch1 GETs bytes [off, off+n) of url (the whole object when n is the object's size and off
// 0: without a Range) through rt and checks them against resource.
func fetch1(ctx context.Context, rt http.RoundTripper, url string, resource []byte, off, n int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	want := http.StatusOK
	if off != 0 || n != int64(len(resource)) {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
		want = http.StatusPartialContent
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	return receive(resp.Body, resource[off:off+n], nil)
}

// Close closes every client, server and link.
func (h *HTTP) Close() { h.closers.run() }

// awaitFanout waits (5 s at most) for the result of the last download's Fanout: OnFanout runs
// as Fanout returns, which may follow the body's last byte a little.
func (h *HTTP) awaitFanout(ctx context.Context) {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case res := <-h.fanouts:
		h.lastKWIK = res
	case <-t.C:
	case <-ctx.Done():
	}
	h.drainFanouts()
}

func (h *HTTP) drainFanouts() {
	for {
		select {
		case res := <-h.fanouts:
			h.lastKWIK = res
		default:
			return
		}
	}
}

// HTTPTimes is how long downloads took each way.
type HTTPTimes struct{ HTTP3, Stripe, KWIK time.Duration }

// HTTPResult is the outcome of HTTP.Run.
type HTTPResult struct {
	Conf      HTTPConfig
	N         int
	HTTPTimes // each way's total time over the N timed repetitions
	// First is the first download each way, NewHTTP's: it includes opening the connections
	// (and KWIK's secondaries joining), with every congestion window at its start.
	First  HTTPTimes
	Shares []Share // who served kwikhttp's last download, the primary first ("")
}

// round downloads the object once each way and checks every byte.
func (h *HTTP) round(ctx context.Context) (HTTPTimes, error) {
	var t HTTPTimes
	size := h.conf.Size
	start := time.Now()
	if err := fetch1(ctx, h.h3, h.h3URL, h.resource, 0, size); err != nil {
		return t, fmt.Errorf("http3: %w", err)
	}
	t.HTTP3 = time.Since(start)

	start = time.Now()
	part := size / int64(len(h.stripes))
	errs := make([]error, len(h.stripes))
	var wg sync.WaitGroup
	for i, u := range h.stripes {
		off, m := int64(i)*part, part
		if i == len(h.stripes)-1 {
			m = size - off
		}
		wg.Go(func() { errs[i] = fetch1(ctx, h.h3, u, h.resource, off, m) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return t, fmt.Errorf("striping: %w", err)
	}
	t.Stripe = time.Since(start)

	start = time.Now()
	if err := fetch1(ctx, h.kwikTr, h.kwikURL, h.resource, 0, size); err != nil {
		return t, fmt.Errorf("kwikhttp: %w", err)
	}
	t.KWIK = time.Since(start)
	return t, nil
}

// FreshSmall times a new client's first request each way, http3's from its one server and
// kwikhttp's from its primary: a Range GET of the object's first n bytes (a small response,
// which the primary serves alone) on a new transport, from the request to the body's last
// byte, the connection's (and KWIK's session's) set-up included, as a user's first small
// download. The transports are closed after.
func (h *HTTP) FreshSmall(ctx context.Context, n int64) (h3, kw time.Duration, err error) {
	h3tr := &http3.Transport{TLSClientConfig: h.h3TLS}
	defer h3tr.Close()
	start := time.Now()
	if err := fetch1(ctx, h3tr, h.h3URL, h.resource, 0, n); err != nil {
		return 0, 0, fmt.Errorf("http3: %w", err)
	}
	h3 = time.Since(start)
	kwtr := &kwikhttp.Transport{TLSClientConfig: h.kwikTLS, Config: h.kwikConf}
	defer kwtr.Close()
	start = time.Now()
	if err := fetch1(ctx, kwtr, h.kwikURL, h.resource, 0, n); err != nil {
		return 0, 0, fmt.Errorf("kwikhttp: %w", err)
	}
	return h3, time.Since(start), nil
}

// Mbps is the rate of a way that took t in total.
func (r HTTPResult) Mbps(t time.Duration) float64 {
	return float64(r.Conf.Size*int64(r.N)) * 8 / t.Seconds() / 1e6
}

// Run downloads the object n times over, each time with http3, striping and kwikhttp, and
// checks every byte.
func (h *HTTP) Run(ctx context.Context, n int) (HTTPResult, error) {
	r := HTTPResult{Conf: h.conf, N: n, First: h.first}
	for range n {
		t, err := h.round(ctx)
		if err != nil {
			return r, err
		}
		r.HTTP3 += t.HTTP3
		r.Stripe += t.Stripe
		r.KWIK += t.KWIK
		h.awaitFanout(ctx) // outside the timing: this round's shares
	}
	if res := h.lastKWIK; res != nil {
		r.Shares = []Share{{Bytes: res.Bytes[""]}}
		for path, b := range res.Bytes {
			if path != "" {
				r.Shares = append(r.Shares, Share{Path: path, Bytes: b})
			}
		}
		slices.SortFunc(r.Shares[1:], func(a, b Share) int { return strings.Compare(a.Path, b.Path) })
	}
	return r, nil
}

// SharesString prints who served kwikhttp's last download, as Downloads.SharesString does.
func (r HTTPResult) SharesString() string {
	return Downloads{Size: r.Conf.Size, Shares: r.Shares}.SharesString()
}
