// Package compare runs KWIK and raw quic-go through the same scenarios, one after the other in
// every repetition and over the same kind of path, so that their ratio means something on a
// noisy machine: a loopback transfer of one stream each way and a burst of small concurrent
// streams (Loopback), and a download that KWIK spreads over a primary and its secondaries
// while quic-go has one server, each server behind its own emulated link (MultiSource), and the
// same download with KWIK's default configuration against quic-go and against striping ranges
// over a quic-go connection to each server (WAN). The root package's benchmarks and `kwik
// bench` both run these scenarios, so they measure the same thing; each reports the time the
// transports took in total over n repetitions, from which the results derive rates and the
// KWIK/quic-go ratio.
package compare

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwik-go/kwik"
)

// Times is what quic-go and KWIK took for the same work, each in total over the repetitions.
type Times struct{ QUIC, KWIK time.Duration }

// Ratio is KWIK's speed relative to quic-go's: above 1, KWIK was faster.
func (t Times) Ratio() float64 { return t.QUIC.Seconds() / t.KWIK.Seconds() }

// conn is what both transports offer the scenarios.
type conn interface {
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

type kwikConn struct{ s kwik.Session }

func (k kwikConn) open(ctx context.Context) (io.ReadWriteCloser, error) {
	return k.s.OpenStreamSync(ctx)
}
func (k kwikConn) accept(ctx context.Context) (io.ReadWriteCloser, error) {
	return k.s.AcceptStream(ctx)
}

// dialKWIK connects a KWIK client to addr, behind which ln accepts, and returns both ends;
// cl closes them.
func dialKWIK(ctx context.Context, ln *kwik.Listener, addr string, clientTLS *tls.Config, conf *kwik.Config, cl *closers) (client, server kwik.Session, err error) {
	type accepted struct {
		s   kwik.Session
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		s, err := ln.Accept(ctx)
		acc <- accepted{s, err}
	}()
	c, err := kwik.Dial(ctx, addr, clientTLS, conf)
	if err != nil {
		return nil, nil, err // Accept returns when the listener closes
	}
	cl.add(func() { c.Close() }) // c, not the result client, which an error return sets to nil
	a := <-acc
	if a.err != nil {
		return nil, nil, a.err
	}
	cl.add(func() { a.s.Close() })
	return c, a.s, nil
}

// closeListener closes ln and the sessions still in its accept queue (rejoins of secondaries,
// say), which would otherwise live until their peers close them or time out.
func closeListener(ln *kwik.Listener) {
	ln.Close()
	for {
		s, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		s.Close()
	}
}

// closers undoes a setup, last step first.
type closers []func()

func (c *closers) add(f func()) { *c = append(*c, f) }

func (c *closers) run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
	*c = nil
}

// receive reads r to its end and checks that it carried want, exactly; onRead, if not nil, is
// told after every read that brought bytes how many have come in all.
func receive(r io.Reader, want []byte, onRead func(got int64)) error {
	buf := make([]byte, 64<<10)
	var off int
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if off+n > len(want) || !bytes.Equal(buf[:n], want[off:off+n]) {
				return fmt.Errorf("wrong bytes at offset %d", off)
			}
			off += n
			if onRead != nil {
				onRead(int64(off))
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if off != len(want) {
		return fmt.Errorf("%d bytes, want %d", off, len(want))
	}
	return nil
}
