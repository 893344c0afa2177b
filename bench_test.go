package kwik

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// The benchmarks run raw quic-go and KWIK side by side in every iteration, over the same
// loopback, so their ratio means something on a noisy machine:
//
//	go test -run '^$' -bench . -benchtime 3x .
//
// Each reports MB/s (or streams/s) for both, kwik/quic, and heap allocations per 32 KiB moved
// for both (the difference is KWIK's own).

// conn is what both transports offer the benchmarks.
type benchConn interface {
	open(ctx context.Context) (io.ReadWriteCloser, error)
	accept(ctx context.Context) (io.ReadWriteCloser, error)
}

type quicConn struct{ c *quic.Conn }

func (q quicConn) open(ctx context.Context) (io.ReadWriteCloser, error) {
	return q.c.OpenStreamSync(ctx)
}
func (q quicConn) accept(ctx context.Context) (io.ReadWriteCloser, error) {
	return q.c.AcceptStream(ctx)
}

type kwikConn struct{ s Session }

func (k kwikConn) open(ctx context.Context) (io.ReadWriteCloser, error) {
	return k.s.OpenStreamSync(ctx)
}
func (k kwikConn) accept(ctx context.Context) (io.ReadWriteCloser, error) {
	return k.s.AcceptStream(ctx)
}

// benchPairs returns a raw quic-go client/server pair and a KWIK one, both on loopback.
func benchPairs(b *testing.B, maxStreams int) (qc, qs, kc, ks benchConn) {
	ctx := testContext(b)
	qconf := &quic.Config{MaxIncomingStreams: int64(maxStreams)}
	stls := testTLS.server.Clone()
	stls.NextProtos = []string{"bench"}
	ctls := testTLS.client.Clone()
	ctls.NextProtos = []string{"bench"}
	ln, err := quic.ListenAddr("127.0.0.1:0", stls, qconf)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	client, err := quic.DialAddr(ctx, ln.Addr().String(), ctls, qconf)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.CloseWithError(0, "") })
	server, err := ln.Accept(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { server.CloseWithError(0, "") })

	kconf := &Config{MaxIncomingStreams: maxStreams}
	p := newPair(b, kconf, kconf)
	return quicConn{client}, quicConn{server}, kwikConn{p.client}, kwikConn{p.server}
}

// transfer moves size bytes from a new stream opened by src to its peer dst, and returns the
// time it took and the heap allocations made meanwhile (by both sides: they share the process).
func transfer(b *testing.B, src, dst benchConn, size int) (time.Duration, uint64) {
	ctx := testContext(b)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		s, err := src.open(ctx)
		if err != nil {
			errc <- err
			return
		}
		buf := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := s.Write(buf); err != nil {
				errc <- err
				return
			}
		}
		errc <- s.Close()
	}()
	s, err := dst.accept(ctx)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	var n int
	for {
		m, err := s.Read(buf)
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	if n != size {
		b.Fatalf("received %d bytes, want %d", n, size)
	}
	s.Close()
	return elapsed, after.Mallocs - before.Mallocs
}

func benchTransfer(b *testing.B, download bool) {
	const size = 256 << 20
	qc, qs, kc, ks := benchPairs(b, 100)
	if download {
		qc, qs, kc, ks = qs, qc, ks, kc // the server sends
	}
	var qt, kt time.Duration
	var qa, ka uint64
	b.ResetTimer()
	for range b.N {
		t, a := transfer(b, qc, qs, size)
		qt, qa = qt+t, qa+a
		t, a = transfer(b, kc, ks, size)
		kt, ka = kt+t, ka+a
	}
	b.StopTimer()
	mb := float64(size) * float64(b.N) / 1e6
	chunks := float64(size/(32<<10)) * float64(b.N)
	b.ReportMetric(mb/qt.Seconds(), "quic-MB/s")
	b.ReportMetric(mb/kt.Seconds(), "kwik-MB/s")
	b.ReportMetric(qt.Seconds()/kt.Seconds(), "kwik/quic")
	b.ReportMetric(float64(qa)/chunks, "quic-allocs/32KiB")
	b.ReportMetric(float64(ka)/chunks, "kwik-allocs/32KiB")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkDownload256MiB: one stream, the server writes 256 MiB, the client reads.
func BenchmarkDownload256MiB(b *testing.B) { benchTransfer(b, true) }

// BenchmarkUpload256MiB: one stream, the client writes 256 MiB, the server reads.
func BenchmarkUpload256MiB(b *testing.B) { benchTransfer(b, false) }

// smallStreams runs n concurrent request/response exchanges of 1 KiB each way, one stream each.
func smallStreams(b *testing.B, client, server benchConn, n int) time.Duration {
	ctx, cancel := context.WithCancel(testContext(b))
	defer cancel()
	go func() {
		for {
			s, err := server.accept(ctx)
			if err != nil {
				return
			}
			go func() {
				req, err := io.ReadAll(s)
				if err == nil {
					s.Write(req)
				}
				s.Close()
			}()
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	req := make([]byte, 1<<10)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := client.open(ctx)
			if err != nil {
				errs <- err
				return
			}
			if _, err := s.Write(req); err != nil {
				errs <- err
				return
			}
			s.Close()
			resp, err := io.ReadAll(s)
			if err == nil && len(resp) != len(req) {
				err = fmt.Errorf("response of %d bytes", len(resp))
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return elapsed
}

// BenchmarkConcurrentSmallStreams: 1,000 concurrent streams, 1 KiB request and response each.
func BenchmarkConcurrentSmallStreams(b *testing.B) {
	const n = 1000
	qc, qs, kc, ks := benchPairs(b, n)
	var qt, kt time.Duration
	b.ResetTimer()
	for range b.N {
		qt += smallStreams(b, qc, qs, n)
		kt += smallStreams(b, kc, ks, n)
	}
	b.StopTimer()
	total := float64(n * b.N)
	b.ReportMetric(total/qt.Seconds(), "quic-streams/s")
	b.ReportMetric(total/kt.Seconds(), "kwik-streams/s")
	b.ReportMetric(qt.Seconds()/kt.Seconds(), "kwik/quic")
	b.ReportMetric(0, "ns/op")
}

var _ = tls.VersionTLS13
