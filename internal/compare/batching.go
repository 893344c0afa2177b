package compare

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/internal/selfsigned"
)

// BatchingConfig describes a Batching comparison.
type BatchingConfig struct {
	Streams  int // concurrent request/response streams in the burst
	Size     int // bytes of each request and of each response
	Requests int // lone requests, one after the other, for the latency percentiles
}

// BatchingSide is what one transport did in a Batching comparison. Wire counts are both ends
// together, during the burst only.
type BatchingSide struct {
	Burst       time.Duration // for every stream of the burst to complete
	QUICPackets uint64        // QUIC packets sent
	WireBytes   uint64        // QUIC bytes sent (UDP payloads, retransmissions included)
	DataPackets uint64        // KWIK DataPackets sent, each one or two QUIC stream writes (0 for quic-go)
	P50, P99    time.Duration // a lone request's round trip: open, request, response, end
}

// BatchingResult compares raw quic-go, KWIK, and KWIK with Config.DisableBatching.
type BatchingResult struct {
	Conf                      BatchingConfig
	QUIC, KWIK, KWIKUnbatched BatchingSide
}

// StreamsPerSecond is the burst's rate on side s.
func (r BatchingResult) StreamsPerSecond(s BatchingSide) float64 {
	return float64(r.Conf.Streams) / s.Burst.Seconds()
}

// Batching runs, on each of raw quic-go, KWIK and KWIK without batching (each over its own
// loopback connection): a burst of concurrent small request/response streams, and then lone
// requests one after the other.
func Batching(ctx context.Context, conf BatchingConfig) (BatchingResult, error) {
	res := BatchingResult{Conf: conf}
	if conf.Streams <= 0 || conf.Size <= 0 || conf.Requests <= 0 {
		return res, errors.New("compare: Batching needs streams, a size and requests")
	}
	serverTLS, clientTLS, err := selfsigned.New()
	if err != nil {
		return res, err
	}
	var cl closers
	defer cl.run()

	// quic-go
	stls := serverTLS.Clone()
	stls.NextProtos = []string{"bench"}
	ctls := clientTLS.Clone()
	ctls.NextProtos = []string{"bench"}
	qconf := &quic.Config{MaxIncomingStreams: int64(conf.Streams)}
	ln, err := quic.ListenAddr("127.0.0.1:0", stls, qconf)
	if err != nil {
		return res, err
	}
	cl.add(func() { ln.Close() })
	qc, err := quic.DialAddr(ctx, ln.Addr().String(), ctls, qconf)
	if err != nil {
		return res, err
	}
	cl.add(func() { qc.CloseWithError(0, "") })
	qs, err := ln.Accept(ctx)
	if err != nil {
		return res, err
	}
	cl.add(func() { qs.CloseWithError(0, "") })
	quicWire := func() (packets, bytes, data uint64) {
		a, b := qc.ConnectionStats(), qs.ConnectionStats()
		return a.PacketsSent + b.PacketsSent, a.BytesSent + b.BytesSent, 0
	}
	if res.QUIC, err = batchingSide(ctx, conf, quicConn{qc}, quicConn{qs}, quicWire); err != nil {
		return res, fmt.Errorf("quic-go: %w", err)
	}

	for _, off := range []bool{false, true} {
		kconf := &kwik.Config{MaxIncomingStreams: conf.Streams, DisableBatching: off}
		kln, err := kwik.Listen("127.0.0.1:0", serverTLS, kconf)
		if err != nil {
			return res, err
		}
		cl.add(func() { closeListener(kln) })
		kc, ks, err := dialKWIK(ctx, kln, kln.Addr().String(), clientTLS, kconf, &cl)
		if err != nil {
			return res, err
		}
		kwikWire := func() (packets, bytes, data uint64) {
			for _, s := range []kwik.Session{kc, ks} {
				p := s.Stats().Paths[0]
				packets += p.QUIC.PacketsSent
				bytes += p.QUIC.BytesSent
				data += p.PacketsSent
			}
			return packets, bytes, data
		}
		side, err := batchingSide(ctx, conf, kwikConn{kc}, kwikConn{ks}, kwikWire)
		if err != nil {
			return res, fmt.Errorf("KWIK (batching disabled: %v): %w", off, err)
		}
		if off {
			res.KWIKUnbatched = side
		} else {
			res.KWIK = side
		}
	}
	return res, nil
}

func batchingSide(ctx context.Context, conf BatchingConfig, client, server conn, wire func() (packets, bytes, data uint64)) (BatchingSide, error) {
	var side BatchingSide
	p0, b0, d0 := wire()
	t, err := smallStreams(ctx, client, server, conf.Streams, conf.Size)
	if err != nil {
		return side, err
	}
	p1, b1, d1 := wire()
	side.Burst, side.QUICPackets, side.WireBytes, side.DataPackets = t, p1-p0, b1-b0, d1-d0

	times := make([]time.Duration, conf.Requests)
	for i := range times {
		if times[i], err = smallStreams(ctx, client, server, 1, conf.Size); err != nil {
			return side, err
		}
	}
	slices.Sort(times)
	side.P50, side.P99 = percentile(times, 0.5), percentile(times, 0.99)
	return side, nil
}
