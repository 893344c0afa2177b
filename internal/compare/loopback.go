package compare

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/internal/selfsigned"
)

// Loopback is a raw quic-go client/server pair and a KWIK one, both over real UDP on
// 127.0.0.1, connected once and reused by every repetition. Its methods must not run
// concurrently.
type Loopback struct {
	quic, kwik struct{ client, server conn }
	closers    closers
}

// NewLoopback connects both pairs; each side accepts maxStreams concurrent incoming streams.
func NewLoopback(ctx context.Context, maxStreams int) (_ *Loopback, err error) {
	l := &Loopback{}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	serverTLS, clientTLS, err := selfsigned.New()
	if err != nil {
		return nil, err
	}

	stls, ctls := benchTLS(serverTLS, clientTLS)
	qconf := &quic.Config{MaxIncomingStreams: int64(maxStreams)}
	ln, err := quic.ListenAddr("127.0.0.1:0", stls, qconf)
	if err != nil {
		return nil, err
	}
	l.closers.add(func() { ln.Close() })
	client, err := quic.DialAddr(ctx, ln.Addr().String(), ctls, qconf)
	if err != nil {
		return nil, err
	}
	l.closers.add(func() { client.CloseWithError(0, "") })
	server, err := ln.Accept(ctx)
	if err != nil {
		return nil, err
	}
	l.closers.add(func() { server.CloseWithError(0, "") })
	l.quic.client, l.quic.server = quicConn{client}, quicConn{server}

	kconf := &kwik.Config{MaxIncomingStreams: maxStreams}
	kln, err := kwik.Listen("127.0.0.1:0", serverTLS, kconf)
	if err != nil {
		return nil, err
	}
	l.closers.add(func() { closeListener(kln) })
	kc, ks, err := dialKWIK(ctx, kln, kln.Addr().String(), clientTLS, kconf, &l.closers)
	if err != nil {
		return nil, err
	}
	l.kwik.client, l.kwik.server = kwikConn{kc}, kwikConn{ks}
	return l, nil
}

// Close closes both pairs.
func (l *Loopback) Close() { l.closers.run() }

// Direction says which side of a Loopback writes in Transfer.
type Direction int

const (
	Upload   Direction = iota // the client writes, the server reads
	Download                  // the server writes, the client reads
)

func (d Direction) String() string {
	if d == Download {
		return "download"
	}
	return "upload"
}

// TransferResult is the outcome of Transfer.
type TransferResult struct {
	Times
	Size, N int64 // bytes per transfer, and repetitions
	// Heap allocations during the transfers, by the whole process (both ends share it), in
	// total over the repetitions.
	QUICMallocs, KWIKMallocs uint64
}

// MBps is the rate of a transport that took d, in MB/s (10^6 bytes).
func (r TransferResult) MBps(d time.Duration) float64 {
	return float64(r.Size*r.N) / 1e6 / d.Seconds()
}

// AllocsPer32KiB is mallocs per 32 KiB moved.
func (r TransferResult) AllocsPer32KiB(mallocs uint64) float64 {
	return float64(mallocs) / (float64(r.Size*r.N) / (32 << 10))
}

// Transfer, n times over, moves size bytes over a new stream in direction dir, first on
// quic-go, then on KWIK.
func (l *Loopback) Transfer(ctx context.Context, dir Direction, size int64, n int) (TransferResult, error) {
	r := TransferResult{Size: size, N: int64(n)}
	qsrc, qdst, ksrc, kdst := l.quic.client, l.quic.server, l.kwik.client, l.kwik.server
	if dir == Download {
		qsrc, qdst, ksrc, kdst = qdst, qsrc, kdst, ksrc
	}
	for range n {
		t, a, err := transfer(ctx, qsrc, qdst, size)
		if err != nil {
			return r, fmt.Errorf("quic-go %v: %w", dir, err)
		}
		r.QUIC, r.QUICMallocs = r.QUIC+t, r.QUICMallocs+a
		t, a, err = transfer(ctx, ksrc, kdst, size)
		if err != nil {
			return r, fmt.Errorf("KWIK %v: %w", dir, err)
		}
		r.KWIK, r.KWIKMallocs = r.KWIK+t, r.KWIKMallocs+a
	}
	return r, nil
}

// transfer moves size bytes from a new stream opened by src to its peer dst, and returns the
// time it took and the heap allocations made meanwhile.
func transfer(ctx context.Context, src, dst conn, size int64) (time.Duration, uint64, error) {
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
		for sent := int64(0); sent < size; sent += int64(len(buf)) {
			if _, err := s.Write(buf[:min(int64(len(buf)), size-sent)]); err != nil {
				errc <- err
				return
			}
		}
		errc <- s.Close()
	}()
	s, err := dst.accept(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer s.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		m, err := s.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, 0, err
		}
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err := <-errc; err != nil {
		return 0, 0, err
	}
	if n != size {
		return 0, 0, fmt.Errorf("received %d bytes, want %d", n, size)
	}
	return elapsed, after.Mallocs - before.Mallocs, nil
}

// StreamsResult is the outcome of SmallStreams.
type StreamsResult struct {
	Times
	Streams, N int // streams per repetition, and repetitions
}

// PerSecond is the rate of a transport that took d, in streams per second.
func (r StreamsResult) PerSecond(d time.Duration) float64 {
	return float64(r.Streams*r.N) / d.Seconds()
}

// SmallStreams, n times over, runs streams concurrent request/response exchanges of 1 KiB
// each way, one stream each, first on quic-go, then on KWIK. The Loopback must allow streams
// concurrent streams.
func (l *Loopback) SmallStreams(ctx context.Context, streams, n int) (StreamsResult, error) {
	r := StreamsResult{Streams: streams, N: n}
	for range n {
		t, err := smallStreams(ctx, l.quic.client, l.quic.server, streams, 1<<10)
		if err != nil {
			return r, fmt.Errorf("quic-go small streams: %w", err)
		}
		r.QUIC += t
		t, err = smallStreams(ctx, l.kwik.client, l.kwik.server, streams, 1<<10)
		if err != nil {
			return r, fmt.Errorf("KWIK small streams: %w", err)
		}
		r.KWIK += t
	}
	return r, nil
}

// smallStreams runs n concurrent streams, each a request of size bytes that the server
// echoes, and returns the time they all took.
func smallStreams(ctx context.Context, client, server conn, n, size int) (time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var served sync.WaitGroup
	served.Go(func() {
		for {
			s, err := server.accept(ctx)
			if err != nil {
				return
			}
			served.Go(func() {
				req, err := io.ReadAll(s)
				if err == nil {
					s.Write(req)
				}
				s.Close()
			})
		}
	})
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	req := make([]byte, size)
	for range n {
		wg.Go(func() {
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
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		// A server goroutine may wait for a request that will not come; closing the
		// Loopback ends it.
		return 0, fmt.Errorf("%w (%d streams of %d failed)", err, 1+len(errs), n)
	}
	cancel()
	served.Wait()
	return elapsed, nil
}
