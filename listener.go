package kwik

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"

	"github.com/quic-go/quic-go"
)

// acceptQueueLen bounds the sessions authenticated but not yet returned by Accept, as quic-go's
// MaxAcceptQueueSize bounds its connections: past it a new session is refused, and the client's
// Dial fails with a *quic.TransportError CONNECTION_REFUSED, as quic-go's does.
const acceptQueueLen = 32

// Listener accepts KWIK sessions: new sessions from clients (this server is their primary)
// and joins of this server to clients' sessions as a secondary, as Config.ListenerRole says
// (both by default). A secondary checks Session.Role before serving. Closing it stops
// accepting; sessions already authenticated may still be returned by Accept, and sessions
// keep running until they close (as in quic-go).
//
// The accept loop hands each QUIC connection to a handshake goroutine of its own; a session
// that authenticates goes to the queue, where Accept takes it. Close cancels the loop and the
// handshakes in progress, waits for them, and then closes done: from then on Accept drains the
// queue and returns ErrServerClosed once it is empty.
type Listener struct {
	ql   *quic.EarlyListener
	conf *Config
	// offerEarly says whether a connection is offered its session as soon as quic-go hands
	// it over, before the client's handshake has completed (0.5-RTT data): not when the TLS
	// config may ask for a client certificate, which the offer then waits for.
	offerEarly bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and the handshakes in progress
	once   sync.Once
	done   chan struct{} // closed by Close once no handshake can queue a session any more
	queue  chan *session
	joins  *joinGuard // join tokens and delegations taken, per session and path

	// The transport and socket under ql, closed once the Listener has closed and the last
	// connection it accepted has ended (accepted sessions outlive Close, as with quic-go).
	closeTransport func() error
	conns          struct {
		sync.Mutex
		open   int  // accepted connections not yet ended
		closed bool // Close has run: no connection will be accepted any more
		done   bool // closeTransport was called
	}
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
	ql, closeTransport, err := quicNet.listen(addr, tc, c.QUIC)
	if err != nil {
		return nil, err
	}
	l := &Listener{ql: ql, conf: c, done: make(chan struct{}), queue: make(chan *session, acceptQueueLen), joins: newJoinGuard(),
		closeTransport: closeTransport, offerEarly: tc.ClientAuth == tls.NoClientCert && tc.GetConfigForClient == nil}
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
		l.conns.Lock()
		l.conns.open++
		l.conns.Unlock()
		context.AfterFunc(conn.Context(), func() { l.connEnded(-1) })
		l.wg.Add(1)
		go l.handshake(conn)
	}
}

// errServerBusy is what a server answers an authentication with when its accept queue is full.
var errServerBusy = &Error{Code: CodeConnectionRefused, Message: "server busy: accept queue full"}

func (l *Listener) handshake(conn *quic.Conn) {
	defer l.wg.Done()
	ctx, cancel := context.WithTimeout(l.ctx, l.conf.HandshakeTimeout)
	defer cancel()
	full := func() bool { return len(l.queue) == cap(l.queue) }
	sess, err := serverHandshake(ctx, conn, l.conf, l.joins, full, l.offerEarly)
	if err != nil {
		switch {
		case l.ctx.Err() != nil:
			err = &Error{Code: CodeConnectionRefused, Message: "server closed"}
		case errors.Is(context.Cause(ctx), context.DeadlineExceeded):
			// The peer did not authenticate in time: its failure, not the server's.
			err = &Error{Code: CodeAuthFailed, Message: "no authentication within the handshake timeout"}
		}
		closeConnWith(conn, err)
		return
	}
	select {
	case l.queue <- sess:
	default:
		// Filled since the check in serverHandshake, by concurrent handshakes.
		sess.closeLocal(errServerBusy)
	}
}

// Accept returns the next authenticated session. After Close it returns the sessions still
// queued, then ErrServerClosed.
func (l *Listener) Accept(ctx context.Context) (Session, error) {
	select {
	case s := <-l.queue:
		return s, nil
	case <-l.done:
		select {
		case s := <-l.queue:
			return s, nil
		default:
			return nil, ErrServerClosed
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Addr returns the local UDP address.
func (l *Listener) Addr() net.Addr { return l.ql.Addr() }

// Close stops accepting: authentications in progress are refused (the client's Dial fails
// with CONNECTION_REFUSED), sessions already authenticated stay in the queue for Accept, which
// returns ErrServerClosed once it is empty, and sessions keep running until they close, as in
// quic-go. A session left in the queue lives until its peer closes it or it times out.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		l.cancel()
		err = l.ql.Close()
		l.wg.Wait()
		close(l.done)
		l.connEnded(0)
	})
	return err
}

// connEnded records that delta accepted connections ended (0: that Close has run) and closes
// the transport once the Listener has closed and no connection it accepted is open.
func (l *Listener) connEnded(delta int) {
	l.conns.Lock()
	l.conns.open += delta
	if delta == 0 {
		l.conns.closed = true
	}
	last := l.conns.closed && l.conns.open == 0 && !l.conns.done
	if last {
		l.conns.done = true
	}
	l.conns.Unlock()
	if last && l.closeTransport != nil {
		l.closeTransport()
	}
}

// ListenAddr is Listen under quic-go's name, so that porting code is a change of import.
func ListenAddr(addr string, tlsConf *tls.Config, conf *Config) (*Listener, error) {
	return Listen(addr, tlsConf, conf)
}
