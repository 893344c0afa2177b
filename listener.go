package kwik

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"

	"github.com/quic-go/quic-go"
)

// acceptQueueLen bounds the sessions authenticated but not yet returned by Accept; past it
// new sessions are refused rather than held.
const acceptQueueLen = 64

// Listener accepts KWIK sessions: new sessions from clients (this server is their primary)
// and joins of this server to clients' sessions as a secondary, as Config.ListenerRole says
// (both by default). A secondary checks Session.Role before serving. Closing it
// stops accepting; sessions already accepted keep running until they close (as in quic-go).
type Listener struct {
	ql   *quic.Listener
	conf *Config

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and the handshakes in progress
	queue  chan *session
	joins  *joinGuard // join tokens and delegations taken, per session and path
}

// Listen listens for KWIK sessions on the UDP address addr. conf may be nil.
func Listen(addr string, tlsConf *tls.Config, conf *Config) (*Listener, error) {
	c, err := conf.populate()
	if err != nil {
		return nil, err
	}
	tc, err := tlsConfig(tlsConf)
	if err != nil {
		return nil, err
	}
	ql, err := quic.ListenAddr(addr, tc, c.QUIC)
	if err != nil {
		return nil, err
	}
	l := &Listener{ql: ql, conf: c, queue: make(chan *session, acceptQueueLen), joins: newJoinGuard()}
	l.joins.self = ql.Addr().String()
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		conn, err := l.ql.Accept(l.ctx)
		if err != nil {
			return
		}
		l.wg.Add(1)
		go l.handshake(conn)
	}
}

func (l *Listener) handshake(conn *quic.Conn) {
	defer l.wg.Done()
	ctx, cancel := context.WithTimeout(l.ctx, l.conf.HandshakeTimeout)
	defer cancel()
	sess, err := serverHandshake(ctx, conn, l.conf, l.joins)
	if err != nil {
		if l.ctx.Err() == nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			// The peer did not authenticate in time: its failure, not the server's.
			err = &Error{Code: CodeAuthFailed, Message: "no authentication within the handshake timeout"}
		}
		closeConnWith(conn, err)
		return
	}
	select {
	case l.queue <- sess:
	default:
		sess.closeLocal(&Error{Code: CodeInternal, Message: "server busy: accept queue full"})
	}
}

// Accept returns the next authenticated session.
func (l *Listener) Accept(ctx context.Context) (Session, error) {
	select {
	case s := <-l.queue:
		return s, nil
	case <-l.ctx.Done():
		return nil, ErrServerClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Addr returns the local UDP address.
func (l *Listener) Addr() net.Addr { return l.ql.Addr() }

// Close stops accepting. Sessions waiting in the accept queue are closed; sessions already
// returned by Accept keep running.
func (l *Listener) Close() error {
	l.cancel()
	err := l.ql.Close()
	l.wg.Wait()
	for {
		select {
		case s := <-l.queue:
			s.closeLocal(&Error{Code: CodeInternal, Message: "listener closed"})
			s.wg.Wait()
		default:
			return err
		}
	}
}

// ListenAddr is Listen under quic-go's name, so that porting code is a change of import.
func ListenAddr(addr string, tlsConf *tls.Config, conf *Config) (*Listener, error) {
	return Listen(addr, tlsConf, conf)
}
