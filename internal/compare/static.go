package compare

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/internal/selfsigned"
)

// StaticConfig describes a StaticSplit scenario.
type StaticConfig struct {
	Rates []int64       // Mbit/s of each KWIK server's link, the primary's first; quic-go's link has the first
	Delay time.Duration // one-way delay of every link
	Size  int64         // bytes downloaded in each repetition
	Chunk int64         // the static split's range size
}

// StaticSplit downloads the same object three ways, each server behind its own netsim link:
// raw quic-go over one link as fast as the primary's; KWIK with Fanout; and KWIK with the
// plain delegation API as a new user writes it (the README's pattern): ranges of Chunk bytes
// assigned round robin to the primary (its own Writes) and each secondary (Delegate), then
// Close, Wait on every delegation and WriteAt what one reports missing. The secondaries run
// ServeFanout, which answers both. KWIK uses the default Config (only the JoinKey set).
// Sessions and links are set up once; its methods must not run concurrently.
type StaticSplit struct {
	conf      StaticConfig
	resource  []byte
	closers   closers
	quic      *quicLink
	clientTLS *tls.Config
	kwik      *kwikSources
}

// NewStaticSplit starts the servers and their links and connects the KWIK client.
func NewStaticSplit(ctx context.Context, conf StaticConfig) (_ *StaticSplit, err error) {
	if len(conf.Rates) < 2 || conf.Size <= 0 || conf.Chunk <= 0 || conf.Delay < 0 {
		return nil, errors.New("compare: StaticSplit needs a primary and a secondary, a size and a chunk")
	}
	if err := positive(conf.Rates); err != nil {
		return nil, fmt.Errorf("compare: StaticSplit: %w", err)
	}
	s := &StaticSplit{conf: conf, resource: newResource(conf.Size)}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	serverTLS, clientTLS, err := selfsigned.New()
	if err != nil {
		return nil, err
	}
	stls, ctls := benchTLS(serverTLS, clientTLS)
	s.clientTLS = ctls
	if s.quic, err = newQUICLink(stls, linkConfig(conf.Rates[0], conf.Delay), &s.closers); err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	rand.Read(key)
	s.kwik, err = newKWIKSources(ctx, &kwik.Config{JoinKey: key}, serverTLS, clientTLS,
		links(conf.Rates, conf.Delay), bytes.NewReader(s.resource), &s.closers)
	return s, err
}

// Close closes every session, server and link.
func (s *StaticSplit) Close() { s.closers.run() }

// StaticResult is the outcome of StaticSplit.Run.
type StaticResult struct {
	Downloads               // QUIC: quic-go; KWIK: the static split
	Fanout    time.Duration // KWIK with Fanout, in total
}

// FanoutRatio is Fanout's speed relative to quic-go's.
func (r StaticResult) FanoutRatio() float64 { return r.QUIC.Seconds() / r.Fanout.Seconds() }

// Run downloads the object n times over, each time with quic-go, Fanout and the static split,
// and checks every byte.
func (s *StaticSplit) Run(ctx context.Context, n int) (StaticResult, error) {
	r := StaticResult{Downloads: newDownloads(s.conf.Size, n, s.conf.Rates)}
	ms := &MultiSource{conf: MultiSourceConfig{Size: s.conf.Size}, resource: s.resource, quic: s.quic, clientTLS: s.clientTLS}
	var last *kwik.FanoutResult
	for range n {
		t, err := ms.quicDownload(ctx)
		if err != nil {
			return r, fmt.Errorf("quic-go download: %w", err)
		}
		r.QUIC += t
		t, _, err = s.kwik.download(ctx, s.resource, s.fanout, nil)
		if err != nil {
			return r, fmt.Errorf("download with Fanout: %w", err)
		}
		r.Fanout += t
		t, fr, err := s.kwik.download(ctx, s.resource, s.static, nil)
		if err != nil {
			return r, fmt.Errorf("static download: %w", err)
		}
		r.KWIK += t
		last = fr
	}
	r.setShares(last, s.kwik.ids)
	return r, nil
}

func (s *StaticSplit) fanout(ctx context.Context, st kwik.Stream) (*kwik.FanoutResult, error) {
	return kwik.Fanout(ctx, st, bytes.NewReader(s.resource), s.conf.Size, s.kwik.ids, nil)
}

// static serves the object with the plain API, as the README shows: round-robin ranges,
// the primary's own written in order, the others delegated; a Write blocked behind a failed
// range reports it and the primary refills it; after Close, Wait on each delegation. Its
// result says who served what, as Fanout's does.
func (s *StaticSplit) static(ctx context.Context, st kwik.Stream) (*kwik.FanoutResult, error) {
	res := &kwik.FanoutResult{Bytes: map[string]int64{}}
	var refill func(error) error
	refill = func(err error) error {
		var de *kwik.DelegationError
		if !errors.As(err, &de) {
			return err
		}
		for {
			_, err := st.WriteAt(s.resource[de.Offset:de.Offset+de.Remaining], de.Offset)
			if err == nil {
				return nil
			}
			if err := refill(err); err != nil {
				return err
			}
		}
	}
	var ds []*kwik.Delegation
	sources := len(s.kwik.ids) + 1
	for i, off := 0, int64(0); off < s.conf.Size; i, off = i+1, off+s.conf.Chunk {
		n := min(s.conf.Chunk, s.conf.Size-off)
		if src := i % sources; src > 0 {
			d, err := st.Delegate(s.kwik.ids[src-1], n, kwik.FanoutRequest(off, n))
			if err == nil {
				ds = append(ds, d)
				continue
			}
			if !errors.Is(err, kwik.ErrPathDead) {
				return nil, err
			}
		}
		for p := s.resource[off : off+n]; len(p) > 0; {
			w, err := st.Write(p)
			p = p[w:]
			if err != nil {
				if err := refill(err); err != nil {
					return nil, err
				}
			}
		}
		res.Bytes[""] += n
	}
	if err := st.Close(); err != nil {
		return nil, err
	}
	for _, d := range ds {
		err := d.Wait(ctx)
		var de *kwik.DelegationError
		if errors.As(err, &de) {
			res.Bytes[d.PathID] += d.Length - de.Remaining
			res.Bytes[""] += de.Remaining
			res.Failed = append(res.Failed, de)
		} else {
			res.Bytes[d.PathID] += d.Length
		}
		if err := refill(err); err != nil {
			return nil, err
		}
	}
	return res, nil
}
