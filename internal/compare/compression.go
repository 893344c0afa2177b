package compare

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/internal/netsim"
	"github.com/kwik-go/kwik/internal/selfsigned"
)

// CompressionConfig describes a Compression comparison.
type CompressionConfig struct {
	Size     int64         // bytes downloaded in each case
	RateMbit int64         // the link's rate
	Delay    time.Duration // the link's one-way delay
}

// CompressionCase is one download: a kind of data, through one transport.
type CompressionCase struct {
	Data      string // "logs" (repetitive JSON lines) or "random"
	Transport string // "quic-go", "KWIK", "KWIK+zstd"
	Elapsed   time.Duration
	WireBytes uint64        // QUIC bytes the server sent (retransmissions included)
	CPU       time.Duration // user+system time of the whole process (both ends and the link) during the download
}

// Mbps is the case's goodput.
func (c CompressionCase) Mbps(size int64) float64 {
	return float64(size) * 8 / c.Elapsed.Seconds() / 1e6
}

// CPUPerMB is the process's CPU time per MB of data moved.
func (c CompressionCase) CPUPerMB(size int64) time.Duration {
	return time.Duration(float64(c.CPU) / (float64(size) / 1e6))
}

// Compression downloads Size bytes of repetitive data and of random data through one netsim
// link, with raw quic-go, KWIK, and KWIK with Config.Compression on both sides.
func Compression(ctx context.Context, conf CompressionConfig) ([]CompressionCase, error) {
	if conf.Size <= 0 || conf.RateMbit <= 0 || conf.Delay < 0 {
		return nil, errors.New("compare: Compression needs a size and a rate")
	}
	random := make([]byte, conf.Size)
	mrand.NewChaCha8([32]byte{4}).Read(random)
	data := []struct {
		name string
		b    []byte
	}{{"logs", LogLines(int(conf.Size))}, {"random", random}}
	serverTLS, clientTLS, err := selfsigned.New()
	if err != nil {
		return nil, err
	}
	link := linkConfig(conf.RateMbit, conf.Delay)
	var cases []CompressionCase
	for _, d := range data {
		for _, transport := range []string{"quic-go", "KWIK", "KWIK+zstd"} {
			c := CompressionCase{Data: d.name, Transport: transport}
			cpu0 := cpuTime()
			var err error
			if transport == "quic-go" {
				c.Elapsed, c.WireBytes, err = quicThroughLink(ctx, serverTLS, clientTLS, link, d.b)
			} else {
				c.Elapsed, c.WireBytes, err = kwikThroughLink(ctx, serverTLS, clientTLS, link, d.b, transport == "KWIK+zstd")
			}
			if err != nil {
				return cases, fmt.Errorf("%s, %s: %w", d.name, transport, err)
			}
			c.CPU = cpuTime() - cpu0
			cases = append(cases, c)
		}
	}
	return cases, nil
}

// LogLines returns n bytes of JSON log lines, the kind of repetitive data compression is for.
func LogLines(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"time":"2026-11-26T12:%02d:%02dZ","level":"info","msg":"request served","path":"/objects/%d","status":200,"bytes":%d,"client":"10.0.%d.%d"}`+"\n",
			i/60%60, i%60, i%97, 1000+i%13, i%7, i%251)
	}
	return b.Bytes()[:n]
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// endpoint is one side of a download: its connection as a conn, what ends it, and what it
// has put on the wire.
type endpoint struct {
	c     conn
	done  context.Context
	wire  func() uint64
	close func()
}

// downloadThroughLink has a server behind a fresh link to listenAddr send data to a client on
// one stream, and returns how long the client took and what the server put on the wire.
func downloadThroughLink(ctx context.Context, listenAddr string, link netsim.Config, data []byte,
	accept func(context.Context) (endpoint, error), dial func(context.Context, string) (endpoint, error)) (time.Duration, uint64, error) {
	r, err := netsim.NewRelay("127.0.0.1:0", listenAddr, link)
	if err != nil {
		return 0, 0, err
	}
	defer r.Close()
	type sent struct {
		wire uint64
		err  error
	}
	done := make(chan sent, 1)
	go func() {
		e, err := accept(ctx)
		if err != nil {
			done <- sent{err: err}
			return
		}
		defer e.close()
		st, err := e.c.open(ctx)
		if err == nil {
			if _, err = st.Write(data); err == nil {
				err = st.Close()
			}
		}
		<-e.done.Done() // the client closes when it has everything
		done <- sent{e.wire(), err}
	}()
	start := time.Now()
	e, err := dial(ctx, r.Addr().String())
	if err != nil {
		return 0, 0, err // accept returns when its listener closes
	}
	defer e.close()
	st, err := e.c.accept(ctx)
	if err != nil {
		return 0, 0, err
	}
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, data) {
		return 0, 0, fmt.Errorf("%d bytes, %v", len(got), err)
	}
	elapsed := time.Since(start)
	e.close()
	s := <-done
	return elapsed, s.wire, s.err
}

// kwikThroughLink downloads data from a KWIK primary.
func kwikThroughLink(ctx context.Context, serverTLS, clientTLS *tls.Config, link netsim.Config, data []byte, compress bool) (time.Duration, uint64, error) {
	conf := &kwik.Config{Compression: compress}
	ln, err := kwik.Listen("127.0.0.1:0", serverTLS, conf)
	if err != nil {
		return 0, 0, err
	}
	defer closeListener(ln)
	session := func(s kwik.Session) endpoint {
		return endpoint{kwikConn{s}, s.Context(), func() uint64 { return s.Stats().Paths[0].QUIC.BytesSent }, func() { s.Close() }}
	}
	return downloadThroughLink(ctx, ln.Addr().String(), link, data,
		func(ctx context.Context) (endpoint, error) {
			s, err := ln.Accept(ctx)
			if err != nil {
				return endpoint{}, err
			}
			return session(s), nil
		},
		func(ctx context.Context, addr string) (endpoint, error) {
			s, err := kwik.Dial(ctx, addr, clientTLS, conf)
			if err != nil {
				return endpoint{}, err
			}
			return session(s), nil
		})
}

// quicThroughLink does the same with raw quic-go.
func quicThroughLink(ctx context.Context, serverTLS, clientTLS *tls.Config, link netsim.Config, data []byte) (time.Duration, uint64, error) {
	stls := serverTLS.Clone()
	stls.NextProtos = []string{"bench"}
	ctls := clientTLS.Clone()
	ctls.NextProtos = []string{"bench"}
	ln, err := quic.ListenAddr("127.0.0.1:0", stls, nil)
	if err != nil {
		return 0, 0, err
	}
	defer ln.Close()
	connection := func(c *quic.Conn) endpoint {
		return endpoint{quicConn{c}, c.Context(), func() uint64 { return c.ConnectionStats().BytesSent }, func() { c.CloseWithError(0, "") }}
	}
	return downloadThroughLink(ctx, ln.Addr().String(), link, data,
		func(ctx context.Context) (endpoint, error) {
			c, err := ln.Accept(ctx)
			if err != nil {
				return endpoint{}, err
			}
			return connection(c), nil
		},
		func(ctx context.Context, addr string) (endpoint, error) {
			c, err := quic.DialAddr(ctx, addr, ctls, nil)
			if err != nil {
				return endpoint{}, err
			}
			return connection(c), nil
		})
}
