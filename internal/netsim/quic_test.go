package netsim

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/selfsigned"
	"github.com/quic-go/quic-go"
)

var testTLS = newTestTLS()

type tlsPair struct{ server, client *tls.Config }

func newTestTLS() tlsPair {
	server, client, err := selfsigned.New()
	if err != nil {
		panic(err)
	}
	protos := []string{"netsim-test"}
	server.NextProtos, client.NextProtos = protos, protos
	return tlsPair{server: server, client: client}
}

const downloadSize = 8 << 20

// payload is what the download server sends: incompressible and the same every time.
var payload = sync.OnceValue(func() []byte {
	b := make([]byte, downloadSize)
	rand.NewChaCha8([32]byte{1}).Read(b)
	return b
})

// quicPath is a quic-go client connected to a download server through a relay. On each stream
// the client sends a big-endian uint64 n and the server answers with the first n bytes of payload.
type quicPath struct {
	relay  *Relay
	client *quic.Conn
}

func newQUICPath(tb testing.TB, conf Config) *quicPath {
	tb.Helper()
	// Own sockets on loopback rather than quic.ListenAddr and quic.DialAddr: the transports can
	// then be closed, and their goroutines ended, when the test ends.
	server := &quic.Transport{Conn: listenLoopback(tb)}
	ln, err := server.Listen(testTLS.server, &quic.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			wg.Go(func() { serveDownloads(conn) })
		}
	})
	tb.Cleanup(func() {
		server.Close() // closes the listener and its connections
		wg.Wait()
	})
	r := startRelay(tb, server.Conn.LocalAddr().(*net.UDPAddr).AddrPort(), conf)
	tr := &quic.Transport{Conn: listenLoopback(tb)}
	tb.Cleanup(func() { tr.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, err := tr.Dial(ctx, r.Addr(), testTLS.client, &quic.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.CloseWithError(0, "") })
	return &quicPath{relay: r, client: client}
}

func listenLoopback(tb testing.TB) *net.UDPConn {
	tb.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func serveDownloads(conn *quic.Conn) {
	defer conn.CloseWithError(0, "")
	for {
		s, err := conn.AcceptStream(context.Background())
		if err != nil {
			return
		}
		var req [8]byte
		if _, err := io.ReadFull(s, req[:]); err != nil {
			s.CancelWrite(1)
			continue
		}
		n := min(binary.BigEndian.Uint64(req[:]), downloadSize)
		if _, err := s.Write(payload()[:n]); err != nil {
			return
		}
		s.Close()
	}
}

// download fetches n bytes into buf, checks them, and returns how long they took from the
// request to the last byte.
func (p *quicPath) download(tb testing.TB, buf []byte) time.Duration {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := p.client.OpenStreamSync(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	if _, err := s.Write(binary.BigEndian.AppendUint64(nil, uint64(len(buf)))); err != nil {
		tb.Fatal(err)
	}
	s.Close()
	if _, err := io.ReadFull(s, buf); err != nil {
		tb.Fatal(err)
	}
	elapsed := time.Since(start)
	if n, err := s.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		tb.Fatalf("after the download: %d bytes, %v; want EOF", n, err)
	}
	if !bytes.Equal(buf, payload()[:len(buf)]) {
		tb.Fatal("download corrupted")
	}
	return elapsed
}

// pathConf is the link of the throughput figures: 40 Mbit/s and 10 ms each way, default queue.
var pathConf = Config{
	Up:   LinkConfig{RateBps: 40_000_000, Delay: 10 * time.Millisecond},
	Down: LinkConfig{RateBps: 40_000_000, Delay: 10 * time.Millisecond},
}

func TestQUICThroughRelay(t *testing.T) {
	p := newQUICPath(t, pathConf)
	elapsed := p.download(t, make([]byte, downloadSize))
	mbps := float64(downloadSize) * 8 / elapsed.Seconds() / 1e6
	rate := float64(pathConf.Down.RateBps) / 1e6
	st := p.relay.Stats()
	t.Logf("%d MiB in %v: %.1f Mbit/s of goodput through a %.0f Mbit/s, %v link (%.0f%%); down link %+v",
		downloadSize>>20, elapsed.Round(time.Millisecond), mbps, rate, pathConf.Down.Delay, 100*mbps/rate, st.Down)
	if mbps < 0.5*rate {
		t.Errorf("%.1f Mbit/s is under half the link rate", mbps)
	}
}

// BenchmarkQUICThroughRelay downloads 8 MiB per iteration over one warm quic-go connection across
// a 40 Mbit/s, 10 ms link, and reports the goodput and its share of the link rate.
func BenchmarkQUICThroughRelay(b *testing.B) {
	b.ReportAllocs()
	p := newQUICPath(b, pathConf)
	buf := make([]byte, downloadSize)
	b.SetBytes(downloadSize)
	var total time.Duration
	b.ResetTimer()
	for b.Loop() {
		total += p.download(b, buf)
	}
	mbps := float64(b.N) * downloadSize * 8 / total.Seconds() / 1e6
	b.ReportMetric(mbps, "Mbit/s")
	b.ReportMetric(mbps*1e6/float64(pathConf.Down.RateBps), "of-link")
}

// BenchmarkRelayForward pushes datagrams through an unlimited link, to show the cost per datagram
// (allocations included) of the relay itself.
func BenchmarkRelayForward(b *testing.B) {
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	setBuffers(sink)
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, maxDatagram)
		for {
			if _, _, err := sink.ReadFromUDPAddrPort(buf); errors.Is(err, net.ErrClosed) {
				return
			}
			got.Add(1)
		}
	}()
	defer func() {
		sink.Close()
		<-done
	}()
	r := startRelay(b, sink.LocalAddr().(*net.UDPAddr).AddrPort(), Config{})
	client, err := net.DialUDP("udp", nil, r.Addr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	msg := make([]byte, 1200)
	const window = 64 // keeps every socket buffer from overflowing
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	sent := 0
	for b.Loop() {
		if _, err := client.Write(msg); err != nil {
			b.Fatal(err)
		}
		sent++
		if sent%window == 0 {
			deadline := time.Now().Add(settleTimeout)
			for got.Load() < int64(sent) {
				if time.Now().After(deadline) {
					b.Fatalf("the sink got %d of %d datagrams; relay %+v", got.Load(), sent, r.Stats())
				}
				runtime.Gosched()
			}
		}
	}
}
