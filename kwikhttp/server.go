package kwikhttp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/kwik-go/kwik"
)

// Defaults of Server's zero fields.
const (
	DefaultFanoutThreshold   = 1 << 20
	DefaultJoinTimeout       = 2 * time.Second // unused: JoinTimeout has no effect any more
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 30 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxDelegations    = 16
	DefaultMaxRanges         = 256
)

// Stream error codes with which a server or the Transport abandons an exchange.
const (
	// CodeCanceled: the client closed the body early, or its request's context ended.
	CodeCanceled kwik.StreamErrorCode = 0x10c
	// CodeIncomplete: the server could not send the whole response (the handler panicked or
	// wrote less than its Content-Length, the transfer failed).
	CodeIncomplete kwik.StreamErrorCode = 0x10d
	// CodeBadRequest: the request could not be read.
	CodeBadRequest kwik.StreamErrorCode = 0x10e
)

// ErrServerClosed is what Serve returns once Close was called.
var ErrServerClosed = errors.New("kwikhttp: server closed")

// Server serves an http.Handler over KWIK: as a primary, the requests of its clients, fanning
// large responses out over its secondaries (see the package documentation); as a secondary,
// the ranges its primaries delegate to it. Which of the two a session gets follows its
// kwik.Session.Role. The zero value serves http.DefaultServeMux with the defaults below. A
// Server must not be copied or changed once it serves.
type Server struct {
	// Handler answers the requests; nil means http.DefaultServeMux. On a secondary it answers
	// the delegations' Range requests.
	Handler http.Handler

	// Secondaries are the addresses (host:port, as the clients dial them) of the secondaries a
	// primary adds to a client's session, at the session's first response of at least
	// FanoutThreshold bytes. None: nothing is fanned out, unless the application adds paths
	// to the session itself.
	Secondaries []string
	// FanoutThreshold is the size from which a response of known size is fanned out. 0 means
	// DefaultFanoutThreshold (1 MiB); negative, never.
	FanoutThreshold int64
	// JoinTimeout has no effect any more; it is kept so that code setting it compiles. The
	// session's first large response takes its Secondaries in at once, joined or not: its
	// headers and first bytes leave from the primary, the client holds the pieces delegated
	// to a secondary until it has joined, and the primary sends again those of one that does
	// not join in time.
	JoinTimeout time.Duration
	// Fanout tunes kwik.Fanout (ChunkSize, MaxInFlight); its Request and Joining are the
	// Server's own.
	Fanout *kwik.FanoutOptions
	// OnFanout, if not nil, is told of every fanned-out response once kwik.Fanout returns:
	// who served what, and whether it failed. For logs and metrics; it must not block.
	OnFanout func(r *http.Request, res *kwik.FanoutResult, err error)

	// ReadHeaderTimeout bounds the reading of a request's head (a delegation's request on a
	// secondary). 0 means DefaultReadHeaderTimeout (10 s).
	ReadHeaderTimeout time.Duration
	// IdleTimeout ends a response (or a delegated range) whose writes make no progress for
	// that long, and a request body that does not come: a client that withholds credit
	// holds no handler for longer. 0 means DefaultIdleTimeout (30 s).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's head. 0 means DefaultMaxHeaderBytes (64 KiB).
	MaxHeaderBytes int
	// MaxDelegations bounds the delegated ranges a secondary serves at once for one session,
	// and MaxRanges for all of them together; further ones wait in the session (KWIK bounds
	// how many). 0 means DefaultMaxDelegations (16) and DefaultMaxRanges (256).
	MaxDelegations, MaxRanges int

	// Logger receives refused requests, failed transfers and fan-outs. nil: silent.
	Logger *slog.Logger

	mu struct {
		sync.Mutex
		ctx       context.Context
		cancel    context.CancelFunc
		listeners map[*kwik.Listener]struct{}
		closed    bool
		ranges    chan struct{}
	}
	wg sync.WaitGroup // sessions being served
}

func (s *Server) init() (context.Context, chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return nil, nil, ErrServerClosed
	}
	if s.mu.ctx == nil {
		s.mu.ctx, s.mu.cancel = context.WithCancel(context.Background())
		s.mu.listeners = map[*kwik.Listener]struct{}{}
		s.mu.ranges = make(chan struct{}, orDefault(s.MaxRanges, DefaultMaxRanges))
	}
	return s.mu.ctx, s.mu.ranges, nil
}

// Serve accepts sessions on ln and serves each until it ends. It always closes ln, and
// returns ErrServerClosed once Close is called, or Accept's error.
func (s *Server) Serve(ln *kwik.Listener) error {
	defer ln.Close()
	ctx, _, err := s.init()
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.mu.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.mu.listeners, ln)
		s.mu.Unlock()
	}()
	for {
		sess, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ErrServerClosed
			}
			return err
		}
		s.mu.Lock()
		if s.mu.closed { // Close is waiting for the sessions it knows of
			s.mu.Unlock()
			sess.Close()
			return ErrServerClosed
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			_ = s.ServeSession(ctx, sess)
		}()
	}
}

// ServeSession serves one session (a primary's or a secondary's) until it ends, ctx ends or
// the Server closes, then closes it and returns once every handler of the session has.
func (s *Server) ServeSession(ctx context.Context, sess kwik.Session) error {
	base, ranges, err := s.init()
	if err != nil {
		sess.Close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopBase := context.AfterFunc(base, cancel)
	defer stopBase()
	stopSess := context.AfterFunc(ctx, func() { sess.Close() })
	defer stopSess()
	switch sess.Role() {
	case kwik.RolePrimary:
		s.servePrimary(ctx, sess)
	case kwik.RoleSecondary:
		s.serveSecondary(ctx, sess, ranges)
	default:
		sess.Close()
		return fmt.Errorf("kwikhttp: ServeSession serves a server's session, not a %v's", sess.Role())
	}
	sess.Close()
	return nil
}

// Close closes the listeners Serve is using and every session being served, and returns once
// their handlers have returned (handlers must return once their request's context ends or
// their writes fail).
func (s *Server) Close() error {
	s.init()
	s.mu.Lock()
	s.mu.closed = true
	s.mu.cancel()
	for ln := range s.mu.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) handler() http.Handler {
	if s.Handler != nil {
		return s.Handler
	}
	return http.DefaultServeMux
}

func (s *Server) logf(level slog.Level, msg string, args ...any) {
	if s.Logger != nil {
		s.Logger.Log(context.Background(), level, msg, args...)
	}
}

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// primarySession is a primary's state for one session: the secondaries' joining.
type primarySession struct {
	sess kwik.Session
	once sync.Once
	wg   *sync.WaitGroup
}

// join asks the client, once per session, to join the Server's secondaries
// (kwik.Session.JoinPath): their paths are then the session's, connecting, and a response may
// delegate to them at once (the client holds those ranges until each has joined). Each
// join's outcome is logged if it fails.
func (p *primarySession) join(s *Server) {
	p.once.Do(func() {
		for _, addr := range s.Secondaries {
			_, result := p.sess.JoinPath(addr)
			p.wg.Go(func() {
				if err := <-result; err != nil {
					s.logf(slog.LevelWarn, "kwikhttp: secondary not added", "session", p.sess.ID(), "address", addr, "err", err)
				}
			})
		}
	})
}

// servePrimary answers every request stream of the session.
func (s *Server) servePrimary(ctx context.Context, sess kwik.Session) {
	var wg sync.WaitGroup
	defer wg.Wait()
	ps := &primarySession{sess: sess, wg: &wg}
	for {
		st, err := sess.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Go(func() { s.serveRequest(ctx, ps, st) })
	}
}

// serveRequest reads one request from st, runs the handler and finishes the response.
func (s *Server) serveRequest(ctx context.Context, ps *primarySession, st kwik.Stream) {
	idle := orDefault(s.IdleTimeout, DefaultIdleTimeout)
	lr := &io.LimitedReader{R: st, N: int64(orDefault(s.MaxHeaderBytes, DefaultMaxHeaderBytes))}
	br := bufio.NewReaderSize(lr, 4<<10)
	_ = st.SetReadDeadline(time.Now().Add(orDefault(s.ReadHeaderTimeout, DefaultReadHeaderTimeout)))
	req, err := http.ReadRequest(br)
	if err != nil {
		s.logf(slog.LevelInfo, "kwikhttp: bad request", "session", ps.sess.ID(), "err", err)
		// A short answer, as net/http gives one, then the stream ends.
		st.SetWriteDeadline(time.Now().Add(idle))
		status := http.StatusBadRequest
		if lr.N <= 0 {
			status = http.StatusRequestHeaderFieldsTooLarge
		}
		fmt.Fprintf(st, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 0\r\n\r\n", status, http.StatusText(status))
		st.Close()
		st.CancelRead(CodeBadRequest)
		return
	}
	lr.N = 1<<63 - 1
	// The body's reads wait at most idle for bytes.
	_ = st.SetReadDeadline(time.Time{})
	body := &requestBody{rc: req.Body, st: st, idle: idle}
	req.Body = body
	req.RemoteAddr = ps.sess.RemoteAddr().String()
	cs := ps.sess.ConnectionState().TLS
	req.TLS = &cs

	// The handler's context ends with the session, and when the client stops reading.
	hctx, cancel := context.WithCancel(context.WithValue(ctx, http.LocalAddrContextKey, ps.sess.LocalAddr()))
	defer cancel()
	stop := context.AfterFunc(st.Context(), cancel)
	defer stop()
	req = req.WithContext(hctx)

	w := newResponseWriter(s, ps, st, req, idle)
	ok := func() (ok bool) {
		defer func() {
			if v := recover(); v != nil {
				if v != http.ErrAbortHandler {
					s.logf(slog.LevelError, "kwikhttp: handler panicked", "url", req.URL.String(), "panic", v, "stack", string(debug.Stack()))
				}
			}
		}()
		s.handler().ServeHTTP(w, req)
		return true
	}()
	w.finish(ok)
	// The client closed its side after the request: read the rest of the body (at most
	// 256 KiB, as net/http) and the stream's end, or tell the client to stop sending.
	_ = st.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := io.CopyN(io.Discard, body.rc, 256<<10); err == io.EOF {
		var one [1]byte
		if _, err := br.Read(one[:]); err == io.EOF {
			return
		}
	}
	st.CancelRead(CodeCanceled)
}

// requestBody is a request's body as the handler reads it: each read waits at most idle.
type requestBody struct {
	rc   io.ReadCloser
	st   kwik.Stream
	idle time.Duration
}

func (b *requestBody) Read(p []byte) (int, error) {
	_ = b.st.SetReadDeadline(time.Now().Add(b.idle))
	return b.rc.Read(p)
}

func (b *requestBody) Close() error { return nil }
