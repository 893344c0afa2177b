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
	conf     MultiSourceConfig
	resource []byte
	ctx      context.Context // ends the secondaries' ServeFanout
	cancel   context.CancelFunc
	serving  sync.WaitGroup
	closers  closers

	// quic-go: one transport, so that closing it ends every quic-go goroutine at once; the
	// client dials the relay, which forwards to the listener on the same socket.
	tr        *quic.Transport
	qln       *quic.Listener
	qrelay    *netsim.Relay
	clientTLS *tls.Config

	// KWIK
	client, primary kwik.Session
	ids             []string        // the secondaries' path IDs
	relays          []*netsim.Relay // the secondaries' links
	secondaries     []kwik.Session
	killed          bool
}

func linkConfig(mbit int64, delay time.Duration) netsim.Config {
	l := netsim.LinkConfig{Delay: delay, RateBps: mbit * 1_000_000}
	return netsim.Config{Up: l, Down: l}
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
	for _, r := range conf.Rates {
		if r <= 0 {
			return nil, errors.New("compare: MultiSource: rates must be positive")
		}
	}
	m := &MultiSource{conf: conf, resource: make([]byte, conf.Size)}
	m.ctx, m.cancel = context.WithCancel(ctx)
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	mrand.NewChaCha8([32]byte{1}).Read(m.resource)
	src := bytes.NewReader(m.resource)
	serverTLS, clientTLS, err := selfsigned.New()
	if err != nil {
		return nil, err
	}

	// Raw quic-go through one link.
	stls := serverTLS.Clone()
	stls.NextProtos = []string{"bench"}
	m.clientTLS = clientTLS.Clone()
	m.clientTLS.NextProtos = []string{"bench"}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	m.tr = &quic.Transport{Conn: udp}
	m.closers.add(func() { m.tr.Close(); udp.Close() })
	if m.qln, err = m.tr.Listen(stls, nil); err != nil {
		return nil, err
	}
	if m.qrelay, err = netsim.NewRelay("127.0.0.1:0", m.qln.Addr().String(), linkConfig(conf.QUICRate, conf.Delay)); err != nil {
		return nil, err
	}
	m.closers.add(func() { m.qrelay.Close() })

	// KWIK: the primary and each secondary behind a link of its own.
	key := make([]byte, 32)
	rand.Read(key)
	kconf := &kwik.Config{JoinKey: key, StreamReceiveWindow: 8 << 20, HeartbeatInterval: 250 * time.Millisecond, PathTimeout: time.Second}
	ln, r, err := m.server(serverTLS, kconf, conf.Rates[0])
	if err != nil {
		return nil, err
	}
	if m.client, m.primary, err = dialKWIK(ctx, ln, r.Addr().String(), clientTLS, kconf, &m.closers); err != nil {
		return nil, err
	}

	for _, rate := range conf.Rates[1:] {
		ln, r, err := m.server(serverTLS, kconf, rate)
		if err != nil {
			return nil, err
		}
		id, sec, err := m.addPath(ctx, ln, r.Addr().String())
		if err != nil {
			return nil, err
		}
		m.serving.Go(func() { kwik.ServeFanout(m.ctx, sec, src) })
		m.ids, m.relays, m.secondaries = append(m.ids, id), append(m.relays, r), append(m.secondaries, sec)
	}
	return m, nil
}

// server starts a KWIK server behind a link of its own.
func (m *MultiSource) server(tlsConf *tls.Config, conf *kwik.Config, rate int64) (*kwik.Listener, *netsim.Relay, error) {
	ln, err := kwik.Listen("127.0.0.1:0", tlsConf, conf)
	if err != nil {
		return nil, nil, err
	}
	m.closers.add(func() { ln.Close() })
	r, err := netsim.NewRelay("127.0.0.1:0", ln.Addr().String(), linkConfig(rate, m.conf.Delay))
	if err != nil {
		return nil, nil, err
	}
	m.closers.add(func() { r.Close() })
	return ln, r, nil
}

// addPath has the primary add the server behind ln, reached at addr, and returns the path's
// ID and the secondary's session.
func (m *MultiSource) addPath(ctx context.Context, ln *kwik.Listener, addr string) (string, kwik.Session, error) {
	done := make(chan error, 1)
	go func() { done <- m.primary.AddPath(addr) }() // returns at the latest when the primary closes
	sec, err := ln.Accept(ctx)
	if err != nil {
		return "", nil, err
	}
	m.closers.add(func() { sec.Close() })
	if err := <-done; err != nil {
		return "", nil, err
	}
	for _, p := range m.primary.GetActivePaths() {
		if !p.IsPrimary && p.Address == addr {
			return p.PathID, sec, nil
		}
	}
	return "", nil, fmt.Errorf("compare: no active path to %s after AddPath", addr)
}

// Close closes every session, server and link. After a kill it first lets the dead path's
// connections finish closing, so that nothing outlives the run.
func (m *MultiSource) Close() {
	if m.killed {
		m.relays[len(m.relays)-1].SetBlackhole(false)
		select {
		case <-m.secondaries[len(m.secondaries)-1].Context().Done():
		case <-time.After(30 * time.Second):
		}
	}
	m.cancel()
	m.closers.run()
	m.serving.Wait()
}

// MultiSourceResult is the outcome of MultiSource.Run.
type MultiSourceResult struct {
	Times
	Size, N   int64         // bytes per download, and repetitions
	LinksMbit int64         // the sum of the KWIK servers' link rates
	Stall     time.Duration // with Kill: the longest wait for bytes after a kill
	Shares    []Share       // who served the last KWIK download, the primary first
}

// Share is what one server sent of a KWIK download.
type Share struct {
	Path  string // path ID; "" is the primary
	Bytes int64
}

// Mbps is the rate of a transport that took d, in Mbit/s.
func (r MultiSourceResult) Mbps(d time.Duration) float64 {
	return float64(r.Size*r.N) * 8 / d.Seconds() / 1e6
}

// OfLinksSum is KWIK's rate as a fraction of the sum of its links' rates.
func (r MultiSourceResult) OfLinksSum() float64 { return r.Mbps(r.KWIK) / float64(r.LinksMbit) }

// SharesString prints the shares as "primary=34% 9f3a2c1=33% ...", path IDs cut to 7 characters.
func (r MultiSourceResult) SharesString() string {
	var parts []string
	for _, s := range r.Shares {
		name := s.Path
		if name == "" {
			name = "primary"
		}
		parts = append(parts, fmt.Sprintf("%s=%.0f%%", name[:min(len(name), 7)], 100*float64(s.Bytes)/float64(r.Size)))
	}
	return strings.Join(parts, " ")
}

// Run downloads the resource n times over, each time first with quic-go, then with KWIK, and
// checks that every byte arrived intact.
func (m *MultiSource) Run(ctx context.Context, n int) (MultiSourceResult, error) {
	r := MultiSourceResult{Size: m.conf.Size, N: int64(n)}
	for _, rate := range m.conf.Rates {
		r.LinksMbit += rate
	}
	var shares map[string]int64
	for range n {
		t, err := m.quicDownload(ctx)
		if err != nil {
			return r, fmt.Errorf("quic-go download: %w", err)
		}
		r.QUIC += t
		t, fr, err := m.kwikDownload(ctx, &r.Stall)
		if err != nil {
			return r, fmt.Errorf("KWIK download: %w", err)
		}
		r.KWIK += t
		if fr != nil {
			shares = fr.Bytes
		}
	}
	for _, id := range append([]string{""}, m.ids...) {
		r.Shares = append(r.Shares, Share{Path: id, Bytes: shares[id]})
	}
	return r, nil
}

func (m *MultiSource) quicDownload(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		c, err := m.qln.Accept(ctx)
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
		st.Write(m.resource)
		st.Close()
		<-c.Context().Done() // the client closes when it has everything
		done <- nil
	}()
	qc, err := m.tr.Dial(ctx, m.qrelay.Addr(), m.clientTLS, nil)
	if err != nil {
		return 0, err
	}
	defer qc.CloseWithError(0, "")
	qs, err := qc.AcceptStream(ctx)
	if err != nil {
		return 0, err
	}
	got, err := io.ReadAll(qs)
	if err != nil || !bytes.Equal(got, m.resource) {
		return 0, fmt.Errorf("%d bytes, %v", len(got), err)
	}
	elapsed := time.Since(start)
	qc.CloseWithError(0, "")
	return elapsed, <-done
}

// kwikDownload raises *stall to the longest wait for bytes after a kill.
func (m *MultiSource) kwikDownload(ctx context.Context, stall *time.Duration) (time.Duration, *kwik.FanoutResult, error) {
	size := m.conf.Size
	got := make([]byte, 0, size)
	start := time.Now()
	type outcome struct {
		res *kwik.FanoutResult
		err error
	}
	res := make(chan outcome, 1)
	go func() {
		st, err := m.primary.OpenStreamSync(ctx)
		if err != nil {
			res <- outcome{err: err}
			return
		}
		fr, err := kwik.Fanout(ctx, st, bytes.NewReader(m.resource), size, m.ids, m.conf.Fanout)
		res <- outcome{fr, err}
	}()
	cs, err := m.client.AcceptStream(ctx)
	if err != nil {
		return 0, nil, err
	}
	buf := make([]byte, 64<<10)
	last := time.Now()
	killed := false
	for {
		n, err := cs.Read(buf)
		if n > 0 {
			now := time.Now()
			if killed {
				*stall = max(*stall, now.Sub(last))
			}
			last = now
			got = append(got, buf[:n]...)
			if m.conf.Kill && !killed && int64(len(got)) > size/2 {
				m.relays[len(m.relays)-1].SetBlackhole(true)
				killed, m.killed = true, true
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, nil, err
		}
	}
	elapsed := time.Since(start)
	if !bytes.Equal(got, m.resource) {
		return 0, nil, fmt.Errorf("%d bytes, not intact", len(got))
	}
	out := <-res
	if out.err != nil {
		return 0, nil, fmt.Errorf("fanout: %w", out.err)
	}
	return elapsed, out.res, nil
}
