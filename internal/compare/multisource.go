package compare

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/internal/netsim"
	"github.com/kwik-go/kwik/internal/selfsigned"
)

// MultiSourceConfig describes a MultiSource scenario.
type MultiSourceConfig struct {
	Rates    []int64             // Mbit/s of each KWIK server's link, the primary's first
	QUICRate int64               // Mbit/s of the one link quic-go downloads through
	Delay    time.Duration       // one-way delay of every link
	Size     int64               // bytes downloaded in each repetition
	Kill     bool                // blackhole the last secondary half way through the first KWIK download, for good
	Fanout   *kwik.FanoutOptions // nil: Fanout's defaults
}

// MultiSource has one KWIK client download one stream that the primary serves with
// kwik.Fanout from itself and its secondaries, each server behind its own netsim link, and
// raw quic-go download the same bytes from one server through one link. Sessions and links
// are set up once and reused by every repetition; its methods must not run concurrently.
type MultiSource struct {
	conf      MultiSourceConfig
	resource  []byte
	closers   closers
	quic      *quicLink // dialed anew for every download
	clientTLS *tls.Config
	kwik      *kwikSources
	killed    bool
}

// NewMultiSource starts the servers and their links, connects the KWIK client to the primary
// and has the primary add every secondary.
func NewMultiSource(ctx context.Context, conf MultiSourceConfig) (_ *MultiSource, err error) {
	switch {
	case len(conf.Rates) == 0 || conf.QUICRate <= 0 || conf.Size <= 0 || conf.Delay < 0:
		return nil, errors.New("compare: MultiSource needs rates, a quic-go rate and a size")
	case conf.Kill && len(conf.Rates) < 2:
		return nil, errors.New("compare: MultiSource: Kill needs a secondary")
	}
	if err := positive(conf.Rates); err != nil {
		return nil, fmt.Errorf("compare: MultiSource: %w", err)
	}
	m := &MultiSource{conf: conf, resource: newResource(conf.Size)}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	serverTLS, clientTLS, err := selfsigned.New()
	if err != nil {
		return nil, err
	}
	stls, ctls := benchTLS(serverTLS, clientTLS)
	m.clientTLS = ctls
	if m.quic, err = newQUICLink(stls, linkConfig(conf.QUICRate, conf.Delay), &m.closers); err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	rand.Read(key)
	kconf := &kwik.Config{JoinKey: key, HeartbeatInterval: 250 * time.Millisecond, PathTimeout: time.Second}
	m.kwik, err = newKWIKSources(ctx, kconf, serverTLS, clientTLS, links(conf.Rates, conf.Delay), bytes.NewReader(m.resource), &m.closers)
	return m, err
}

// Close closes every session, server and link. After a kill it first lets the dead path's
// connections finish closing, so that nothing outlives the run.
func (m *MultiSource) Close() {
	if m.killed {
		m.kwik.relays[len(m.kwik.relays)-1].SetBlackhole(false)
		select {
		case <-m.kwik.secondaries[len(m.kwik.secondaries)-1].Context().Done():
		case <-time.After(30 * time.Second):
		}
	}
	m.closers.run()
}

// MultiSourceResult is the outcome of MultiSource.Run.
type MultiSourceResult struct {
	Downloads
	Stall time.Duration // with Kill: the longest wait for bytes after a kill
}

// Run downloads the resource n times over, each time first with quic-go, then with KWIK, and
// checks that every byte arrived intact.
func (m *MultiSource) Run(ctx context.Context, n int) (MultiSourceResult, error) {
	r := MultiSourceResult{Downloads: newDownloads(m.conf.Size, n, m.conf.Rates)}
	var last *kwik.FanoutResult
	for range n {
		t, err := m.quicDownload(ctx)
		if err != nil {
			return r, fmt.Errorf("quic-go download: %w", err)
		}
		r.QUIC += t
		t, fr, err := m.kwik.download(ctx, m.resource, m.fanout, m.killHalfWay(&r.Stall))
		if err != nil {
			return r, fmt.Errorf("KWIK download: %w", err)
		}
		r.KWIK += t
		last = fr
	}
	r.setShares(last, m.kwik.ids)
	return r, nil
}

func (m *MultiSource) fanout(ctx context.Context, st kwik.Stream) (*kwik.FanoutResult, error) {
	return kwik.Fanout(ctx, st, bytes.NewReader(m.resource), m.conf.Size, m.kwik.ids, m.conf.Fanout)
}

// killHalfWay returns what a KWIK download tells of every read: with Kill, it blackholes the
// last secondary once half the bytes are in, for good, and from then on raises *stall to the
// longest wait for bytes.
func (m *MultiSource) killHalfWay(stall *time.Duration) func(got int64) {
	last := time.Now()
	killed := false
	return func(got int64) {
		now := time.Now()
		if killed {
			*stall = max(*stall, now.Sub(last))
		}
		last = now
		if m.conf.Kill && !killed && got > m.conf.Size/2 {
			m.kwik.relays[len(m.kwik.relays)-1].SetBlackhole(true)
			killed, m.killed = true, true
		}
	}
}

// quicDownload dials a connection through the link, on which the server writes the resource.
func (m *MultiSource) quicDownload(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		c, err := m.quic.ln.Accept(ctx)
		if err != nil {
			done <- err
			return
		}
		defer c.CloseWithError(0, "")
		err = push(ctx, c, m.resource)
		<-c.Context().Done() // the client closes when it has everything
		done <- err
	}()
	qc, err := m.quic.dial(ctx, m.clientTLS, nil)
	if err != nil {
		return 0, err
	}
	defer qc.CloseWithError(0, "")
	qs, err := qc.AcceptStream(ctx)
	if err != nil {
		return 0, err
	}
	if err := receive(qs, m.resource, nil); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	qc.CloseWithError(0, "")
	return elapsed, <-done
}

// Downloads is what repeated downloads of one object took, and who served KWIK's.
type Downloads struct {
	Times
	Size, N   int64   // bytes per download, and repetitions
	LinksMbit int64   // the sum of the KWIK servers' link rates
	Shares    []Share // who served the last KWIK download, the primary first
	// Duplicated and HandedBack are the last KWIK download's FanoutResult's: what the primary
	// sent again of the secondaries' pieces, and what it gave them of its own queue.
	Duplicated, HandedBack int64
}

// Share is what one server sent of a KWIK download.
type Share struct {
	Path  string // path ID; "" is the primary
	Bytes int64
}

func newDownloads(size int64, n int, rates []int64) Downloads {
	d := Downloads{Size: size, N: int64(n)}
	for _, r := range rates {
		d.LinksMbit += r
	}
	return d
}

// setShares records who served a download: fr says it for a Fanout over ids, nil for a
// download that the primary served alone.
func (d *Downloads) setShares(fr *kwik.FanoutResult, ids []string) {
	if fr == nil {
		d.Shares = []Share{{Bytes: d.Size}}
		return
	}
	d.Shares, d.Duplicated, d.HandedBack = nil, fr.Duplicated, fr.HandedBack
	for _, id := range append([]string{""}, ids...) {
		d.Shares = append(d.Shares, Share{Path: id, Bytes: fr.Bytes[id]})
	}
}

// Mbps is the rate of a transport that took t, in Mbit/s.
func (d Downloads) Mbps(t time.Duration) float64 {
	return float64(d.Size*d.N) * 8 / t.Seconds() / 1e6
}

// OfLinksSum is KWIK's rate as a fraction of the sum of its links' rates.
func (d Downloads) OfLinksSum() float64 { return d.Mbps(d.KWIK) / float64(d.LinksMbit) }

// SharesString prints the shares as "primary=34% 9f3a2c1=33% ...", path IDs cut to 7 characters.
func (d Downloads) SharesString() string {
	var parts []string
	for _, s := range d.Shares {
		name := s.Path
		if name == "" {
			name = "primary"
		}
		parts = append(parts, fmt.Sprintf("%s=%.0f%%", name[:min(len(name), 7)], 100*float64(s.Bytes)/float64(d.Size)))
	}
	if d.Duplicated > 0 {
		parts = append(parts, fmt.Sprintf("(sent again %.1f%%)", 100*float64(d.Duplicated)/float64(d.Size)))
	}
	if d.HandedBack > 0 {
		parts = append(parts, fmt.Sprintf("(handed back %.1f%%)", 100*float64(d.HandedBack)/float64(d.Size)))
	}
	return strings.Join(parts, " ")
}

// positive checks that every link rate is positive.
func positive(rates []int64) error {
	for _, r := range rates {
		if r <= 0 {
			return errors.New("rates must be positive")
		}
	}
	return nil
}

// newResource returns size bytes of the same pseudo-random data every time.
func newResource(size int64) []byte {
	b := make([]byte, size)
	mrand.NewChaCha8([32]byte{1}).Read(b)
	return b
}

// benchTLS returns clones of the TLS configurations for the quic-go scenarios.
func benchTLS(serverTLS, clientTLS *tls.Config) (server, client *tls.Config) {
	server, client = serverTLS.Clone(), clientTLS.Clone()
	server.NextProtos = []string{"bench"}
	client.NextProtos = []string{"bench"}
	return server, client
}

func linkConfig(mbit int64, delay time.Duration) netsim.Config {
	l := netsim.LinkConfig{Delay: delay, RateBps: mbit * 1_000_000}
	return netsim.Config{Up: l, Down: l}
}

// links returns a link of each rate, all with the same one-way delay.
func links(rates []int64, delay time.Duration) []netsim.Config {
	out := make([]netsim.Config, len(rates))
	for i, r := range rates {
		out[i] = linkConfig(r, delay)
	}
	return out
}

// quicLink is a quic-go listener behind an emulated link. Its transport dials the link too,
// so that closing it ends every quic-go goroutine of the link at once.
type quicLink struct {
	tr    *quic.Transport
	ln    *quic.Listener
	relay *netsim.Relay
}

// newQUICLink starts a quic-go listener behind a link; cl closes both.
func newQUICLink(serverTLS *tls.Config, link netsim.Config, cl *closers) (*quicLink, error) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	q := &quicLink{tr: &quic.Transport{Conn: udp}}
	cl.add(func() { q.tr.Close(); udp.Close() })
	if q.ln, err = q.tr.Listen(serverTLS, nil); err != nil {
		return nil, err
	}
	if q.relay, err = netsim.NewRelay("127.0.0.1:0", q.ln.Addr().String(), link); err != nil {
		return nil, err
	}
	cl.add(func() { q.relay.Close() })
	return q, nil
}

// dial connects to the listener through the link; a nil conf means quic-go's defaults.
func (q *quicLink) dial(ctx context.Context, clientTLS *tls.Config, conf *quic.Config) (*quic.Conn, error) {
	return q.tr.Dial(ctx, q.relay.Addr(), clientTLS, conf)
}

// connect dials the listener through the link and returns both ends of the connection; cl
// closes them.
func (q *quicLink) connect(ctx context.Context, clientTLS *tls.Config, conf *quic.Config, cl *closers) (client, server *quic.Conn, err error) {
	if client, err = q.dial(ctx, clientTLS, conf); err != nil {
		return nil, nil, err
	}
	cl.add(func() { client.CloseWithError(0, "") })
	if server, err = q.ln.Accept(ctx); err != nil {
		return nil, nil, err
	}
	cl.add(func() { server.CloseWithError(0, "") })
	return client, server, nil
}

// push has the server end c open a stream, write b on it and close it.
func push(ctx context.Context, c *quic.Conn, b []byte) error {
	st, err := c.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	if _, err := st.Write(b); err != nil {
		return err
	}
	return st.Close()
}

// kwikSources is a KWIK client connected to a primary that has added its secondaries, each
// server behind a link of its own; the secondaries answer Fanout's delegations from a source.
type kwikSources struct {
	client, primary kwik.Session
	ids             []string        // the secondaries' path IDs
	relays          []*netsim.Relay // the secondaries' links
	secondaries     []kwik.Session
}

// newKWIKSources starts a server behind each link, the primary's first, connects the client
// to the primary through its link and has the primary add every secondary through theirs;
// the secondaries serve src with ServeFanout until ctx ends or cl runs. cl closes everything.
func newKWIKSources(ctx context.Context, conf *kwik.Config, serverTLS, clientTLS *tls.Config, links []netsim.Config, src io.ReaderAt, cl *closers) (_ *kwikSources, err error) {
	var serving sync.WaitGroup
	cl.add(serving.Wait) // last: the sessions' closing ends ServeFanout
	ctx, cancel := context.WithCancel(ctx)
	cl.add(cancel)
	k := &kwikSources{}
	ln, r, err := kwikServer(serverTLS, conf, links[0], cl)
	if err != nil {
		return nil, err
	}
	if k.client, k.primary, err = dialKWIK(ctx, ln, r.Addr().String(), clientTLS, conf, cl); err != nil {
		return nil, err
	}
	for _, link := range links[1:] {
		ln, r, err := kwikServer(serverTLS, conf, link, cl)
		if err != nil {
			return nil, err
		}
		id, sec, err := k.addPath(ctx, ln, r.Addr().String(), cl)
		if err != nil {
			return nil, err
		}
		serving.Go(func() { kwik.ServeFanout(ctx, sec, src) })
		k.ids, k.relays, k.secondaries = append(k.ids, id), append(k.relays, r), append(k.secondaries, sec)
	}
	return k, nil
}

// kwikServer starts a KWIK server behind a link of its own; cl closes both.
func kwikServer(tlsConf *tls.Config, conf *kwik.Config, link netsim.Config, cl *closers) (*kwik.Listener, *netsim.Relay, error) {
	ln, err := kwik.Listen("127.0.0.1:0", tlsConf, conf)
	if err != nil {
		return nil, nil, err
	}
	cl.add(func() { closeListener(ln) })
	r, err := netsim.NewRelay("127.0.0.1:0", ln.Addr().String(), link)
	if err != nil {
		return nil, nil, err
	}
	cl.add(func() { r.Close() })
	return ln, r, nil
}

// addPath has the primary add the server behind ln, reached at addr, and returns the path's
// ID and the secondary's session, which cl closes.
func (k *kwikSources) addPath(ctx context.Context, ln *kwik.Listener, addr string, cl *closers) (string, kwik.Session, error) {
	done := make(chan error, 1)
	go func() { done <- k.primary.AddPath(addr) }() // returns at the latest when the primary closes
	sec, err := ln.Accept(ctx)
	if err != nil {
		return "", nil, err
	}
	cl.add(func() { sec.Close() })
	if err := <-done; err != nil {
		return "", nil, err
	}
	for _, p := range k.primary.GetActivePaths() {
		if !p.IsPrimary && p.Address == addr {
			return p.PathID, sec, nil
		}
	}
	return "", nil, fmt.Errorf("compare: no active path to %s after AddPath", addr)
}

// download has the primary open a stream and serve resource on it with serve, while the
// client reads it and checks every byte; onRead, if not nil, is told after every read how many
// bytes have come. It returns the time from opening the stream to the last byte's arrival, and
// what serve returned.
func (k *kwikSources) download(ctx context.Context, resource []byte, serve func(context.Context, kwik.Stream) (*kwik.FanoutResult, error), onRead func(got int64)) (time.Duration, *kwik.FanoutResult, error) {
	start := time.Now()
	type outcome struct {
		res *kwik.FanoutResult
		err error
	}
	res := make(chan outcome, 1)
	go func() {
		st, err := k.primary.OpenStreamSync(ctx)
		if err != nil {
			res <- outcome{err: err}
			return
		}
		fr, err := serve(ctx, st)
		res <- outcome{fr, err}
	}()
	cs, err := k.client.AcceptStream(ctx)
	if err != nil {
		return 0, nil, err
	}
	if err := receive(cs, resource, onRead); err != nil {
		return 0, nil, err
	}
	elapsed := time.Since(start)
	cs.Close() // the stream ends both ways, so that it no longer counts against the client's limit
	out := <-res
	if out.err != nil {
		return 0, nil, fmt.Errorf("serving: %w", out.err)
	}
	return elapsed, out.res, nil
}
