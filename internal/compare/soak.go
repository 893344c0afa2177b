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
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/internal/selfsigned"
)

// SoakConfig describes a Soak: Sessions clients at once, each downloading Streams streams of
// StreamSize bytes at once.
type SoakConfig struct {
	Sessions   int
	Streams    int
	StreamSize int64
}

// SoakSide is what one transport did in a Soak. Memory and goroutines are per session (for
// quic-go: per connection) and count both ends, client and servers, since they share the
// process: a KWIK session is a client, a primary and a secondary, over two QUIC connections.
type SoakSide struct {
	Setup      time.Duration // to connect every session (KWIK: and have its secondary join)
	Elapsed    time.Duration // for every stream of every session to complete
	P50, P99   time.Duration // one stream's completion time, from opening it to its last byte
	HeapIdle   float64       // live heap per session once all are connected, before any transfer
	HeapPeak   float64       // the highest heap per session seen during the transfers
	Goroutines float64       // per session, once all are connected
}

// SoakResult is a Soak's outcome for both transports.
type SoakResult struct {
	Conf           SoakConfig
	QUIC, KWIK     SoakSide
	SecondaryShare float64 // of the bytes KWIK's clients received, the part the secondary sent
}

// Mbps is the aggregate download rate of side s.
func (r SoakResult) Mbps(s SoakSide) float64 {
	return float64(int64(r.Conf.Sessions*r.Conf.Streams)*r.Conf.StreamSize) * 8 / s.Elapsed.Seconds() / 1e6
}

// Soak runs many concurrent sessions against one server: quic-go clients against one quic-go
// server, then KWIK clients against one primary and one secondary (every stream served with
// Fanout from both), all over real UDP on loopback. Every byte is checked.
func Soak(ctx context.Context, conf SoakConfig) (SoakResult, error) {
	if conf.Sessions <= 0 || conf.Streams <= 0 || conf.StreamSize <= 0 {
		return SoakResult{}, errors.New("compare: Soak needs sessions, streams and a stream size")
	}
	res := SoakResult{Conf: conf}
	resource := make([]byte, conf.StreamSize)
	mrand.NewChaCha8([32]byte{2}).Read(resource)
	serverTLS, clientTLS, err := selfsigned.New()
	if err != nil {
		return res, err
	}
	g0 := runtime.NumGoroutine()
	if res.QUIC, err = soakQUIC(ctx, conf, resource, serverTLS, clientTLS); err != nil {
		return res, fmt.Errorf("quic-go: %w", err)
	}
	// Let quic-go's closing connections go, so that they do not count in KWIK's baseline.
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > g0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if res.KWIK, res.SecondaryShare, err = soakKWIK(ctx, conf, resource, serverTLS, clientTLS); err != nil {
		return res, fmt.Errorf("KWIK: %w", err)
	}
	return res, nil
}

// soakMeter measures heap and goroutines around a soak run.
type soakMeter struct {
	sessions   float64
	heap0      uint64
	goroutines int
	peak       atomic.Uint64
	stop       chan struct{}
	sampler    sync.WaitGroup
}

func heapAlloc(gc bool) uint64 {
	if gc {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func newSoakMeter(sessions int) *soakMeter {
	return &soakMeter{sessions: float64(sessions), heap0: heapAlloc(true), goroutines: runtime.NumGoroutine()}
}

// connected records the idle cost of the sessions and starts sampling the heap's peak.
func (m *soakMeter) connected(side *SoakSide) {
	side.HeapIdle = float64(above(heapAlloc(true), m.heap0)) / m.sessions
	side.Goroutines = float64(runtime.NumGoroutine()-m.goroutines) / m.sessions
	m.stop = make(chan struct{})
	m.sampler.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if h := heapAlloc(false); h > m.peak.Load() {
				m.peak.Store(h)
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	})
}

// done stops sampling and records the peak.
func (m *soakMeter) done(side *SoakSide) {
	close(m.stop)
	m.sampler.Wait()
	side.HeapPeak = float64(above(m.peak.Load(), m.heap0)) / m.sessions
}

func above(h, base uint64) uint64 { return h - min(h, base) }

// soakStreams has every client download streams streams at once, checks every byte against
// resource, and returns the time all took and each stream's completion time.
func soakStreams(ctx context.Context, clients []conn, streams int, resource []byte) (time.Duration, []time.Duration, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	times := make([]time.Duration, len(clients)*streams)
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range clients {
		for j := range streams {
			wg.Go(func() {
				t0 := time.Now()
				if err := soakStream(ctx, c, resource); err != nil {
					cancel(fmt.Errorf("session %d, stream %d: %w", i, j, err))
					return
				}
				times[i*streams+j] = time.Since(t0)
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := context.Cause(ctx); err != nil {
		return 0, nil, err
	}
	slices.Sort(times)
	return elapsed, times, nil
}

func soakStream(ctx context.Context, c conn, resource []byte) error {
	st, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Close() }) // a failed run ends every stream
	defer stop()
	if _, err := st.Write([]byte{'G'}); err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	return receive(st, resource, nil)
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// dialAll dials n sessions, 32 at a time.
func dialAll[T any](ctx context.Context, n int, dial func(context.Context) (T, error)) ([]T, error) {
	out := make([]T, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i], errs[i] = dial(ctx)
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

func soakQUIC(ctx context.Context, conf SoakConfig, resource []byte, serverTLS, clientTLS *tls.Config) (side SoakSide, err error) {
	meter := newSoakMeter(conf.Sessions)
	stls := serverTLS.Clone()
	stls.NextProtos = []string{"soak"}
	ctls := clientTLS.Clone()
	ctls.NextProtos = []string{"soak"}
	qconf := &quic.Config{MaxIncomingStreams: int64(conf.Streams)}
	ln, err := quic.ListenAddr("127.0.0.1:0", stls, qconf)
	if err != nil {
		return side, err
	}
	var serving sync.WaitGroup
	defer serving.Wait()
	defer ln.Close()
	serving.Go(func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			serving.Go(func() {
				for {
					st, err := c.AcceptStream(ctx)
					if err != nil {
						return
					}
					serving.Go(func() {
						io.Copy(io.Discard, st)
						st.Write(resource)
						st.Close()
					})
				}
			})
		}
	})
	t0 := time.Now()
	conns, err := dialAll(ctx, conf.Sessions, func(ctx context.Context) (*quic.Conn, error) {
		return quic.DialAddr(ctx, ln.Addr().String(), ctls, qconf)
	})
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseWithError(0, "")
			}
		}
	}()
	if err != nil {
		return side, err
	}
	side.Setup = time.Since(t0)
	clients := make([]conn, len(conns))
	for i, c := range conns {
		clients[i] = quicConn{c}
	}
	meter.connected(&side)
	elapsed, times, err := soakStreams(ctx, clients, conf.Streams, resource)
	meter.done(&side)
	if err != nil {
		return side, err
	}
	side.Elapsed, side.P50, side.P99 = elapsed, percentile(times, 0.5), percentile(times, 0.99)
	return side, nil
}

func soakKWIK(ctx context.Context, conf SoakConfig, resource []byte, serverTLS, clientTLS *tls.Config) (side SoakSide, share float64, err error) {
	meter := newSoakMeter(conf.Sessions)
	key := make([]byte, 32)
	rand.Read(key)
	kconf := &kwik.Config{JoinKey: key, MaxIncomingStreams: conf.Streams}
	primary, err := kwik.Listen("127.0.0.1:0", serverTLS, kconf)
	if err != nil {
		return side, 0, err
	}
	defer closeListener(primary)
	secondary, err := kwik.Listen("127.0.0.1:0", serverTLS, kconf)
	if err != nil {
		return side, 0, err
	}
	defer closeListener(secondary)
	srvCtx, cancel := context.WithCancel(ctx)
	var serving sync.WaitGroup
	defer serving.Wait()
	defer cancel()
	src := bytes.NewReader(resource)
	serving.Go(func() {
		for {
			s, err := secondary.Accept(srvCtx)
			if err != nil {
				return
			}
			serving.Go(func() { kwik.ServeFanout(srvCtx, s, src) })
		}
	})
	// Each primary session adds the secondary, then answers every stream with Fanout: a
	// small chunk at a time to the secondary, the rest written by the primary itself.
	joined := make(chan error, conf.Sessions)
	opts := &kwik.FanoutOptions{ChunkSize: max(conf.StreamSize/4, 1), MaxInFlight: 1}
	serving.Go(func() {
		for {
			s, err := primary.Accept(srvCtx)
			if err != nil {
				return
			}
			serving.Go(func() {
				err := retryBusy(srvCtx, func() error { return s.AddPath(secondary.Addr().String()) },
					func(error) bool { return true })
				joined <- err
				if err != nil {
					return
				}
				var ids []string
				for _, p := range s.GetActivePaths() {
					if !p.IsPrimary {
						ids = append(ids, p.PathID)
					}
				}
				for {
					st, err := s.AcceptStream(srvCtx)
					if err != nil {
						return
					}
					serving.Go(func() {
						io.Copy(io.Discard, st)
						kwik.Fanout(srvCtx, st, src, int64(len(resource)), ids, opts)
					})
				}
			})
		}
	})
	t0 := time.Now()
	sessions, err := dialAll(ctx, conf.Sessions, func(ctx context.Context) (kwik.Session, error) {
		var s kwik.Session
		err := retryBusy(ctx, func() (err error) {
			s, err = kwik.Dial(ctx, primary.Addr().String(), clientTLS, kconf)
			return err
		}, refused)
		return s, err
	})
	defer func() {
		// Concurrently: each Close waits for its peer's answer.
		var wg sync.WaitGroup
		for _, s := range sessions {
			if s != nil {
				wg.Go(func() { s.Close() })
			}
		}
		wg.Wait()
	}()
	if err != nil {
		return side, 0, err
	}
	for range conf.Sessions {
		select {
		case err := <-joined:
			if err != nil {
				return side, 0, fmt.Errorf("AddPath: %w", err)
			}
		case <-ctx.Done():
			return side, 0, ctx.Err()
		}
	}
	side.Setup = time.Since(t0)
	clients := make([]conn, len(sessions))
	for i, s := range sessions {
		clients[i] = kwikConn{s}
	}
	meter.connected(&side)
	elapsed, times, err := soakStreams(ctx, clients, conf.Streams, resource)
	meter.done(&side)
	if err != nil {
		return side, 0, err
	}
	side.Elapsed, side.P50, side.P99 = elapsed, percentile(times, 0.5), percentile(times, 0.99)
	var total, fromSecondary uint64
	for _, s := range sessions {
		st := s.Stats()
		total += st.BytesReceived
		for _, p := range st.Paths {
			if !p.IsPrimary {
				fromSecondary += p.BytesReceived
			}
		}
	}
	if total > 0 {
		share = float64(fromSecondary) / float64(total)
	}
	return side, share, nil
}

// retryBusy runs f until it succeeds, fails with an error that again does not take for
// refusal, or has failed eight times, backing off from 20 ms to half a second between attempts, as a client or a
// server under load would: a listener whose accept queue is full refuses a session (as quic-go
// refuses a connection), and 500 sessions at once on two cores, each then joining the same
// secondary, overflow the primary's queue and the secondary's now and then (a refused join
// tells the primary only that the client could not join: every failed join is tried again).
func retryBusy(ctx context.Context, f func() error, again func(error) bool) error {
	wait := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || !again(err) || attempt == 8 {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// refused says whether err is a listener's refusal of a session, its accept queue full: KWIK's
// answer, or the QUIC connection closed with CONNECTION_REFUSED when the client had not read
// the answer yet.
func refused(err error) bool {
	var ke *kwik.Error
	var te *quic.TransportError
	return errors.As(err, &ke) && ke.Code == kwik.CodeConnectionRefused ||
		errors.As(err, &te) && te.ErrorCode == quic.ConnectionRefused
}
