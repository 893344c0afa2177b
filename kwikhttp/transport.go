package kwikhttp

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/kwik-go/kwik"
)

// ErrTransportClosed is what RoundTrip returns once Close was called.
var ErrTransportClosed = errors.New("kwikhttp: transport closed")

// ErrDigestMismatch is what a response body's Read returns, instead of io.EOF, when the body
// does not match the sha-256 Content-Digest or Repr-Digest the response announced.
var ErrDigestMismatch = errors.New("kwikhttp: body does not match its digest")

// Transport is an http.RoundTripper over KWIK. It keeps one session per primary (host:port
// of the URL; 443 by default), opened at the first request and reused while it lives, and
// sends each request on a stream of its own. URLs have the https scheme (or kwik, for
// http.Transport.RegisterProtocol). The zero value is ready to use; a Transport must not be
// copied or changed once used, and is safe for concurrent use.
type Transport struct {
	// TLSClientConfig is the TLS configuration of every session; nil: the system's roots.
	// Its ServerName defaults to the URL's host.
	TLSClientConfig *tls.Config
	// Config configures every session (nil: KWIK's defaults). AllowPath and PathTLS decide
	// which secondaries a primary may have this client join, and how they are trusted.
	Config *kwik.Config
	// Dial, if not nil, opens the session to addr in place of kwik.Dial.
	Dial func(ctx context.Context, addr string, tlsConf *tls.Config, conf *kwik.Config) (kwik.Session, error)
	// MaxResponseHeaderBytes bounds a response's head. 0 means 1 MiB.
	MaxResponseHeaderBytes int64

	mu struct {
		sync.Mutex
		ctx      context.Context // ends with Close: the dials
		cancel   context.CancelFunc
		sessions map[string]*clientSession
		closed   bool
	}
	dials sync.WaitGroup
}

// clientSession is a session to one primary, or its dial under way.
type clientSession struct {
	ready  chan struct{} // closed once sess or err is set
	sess   kwik.Session
	err    error
	active int // exchanges under way, guarded by Transport.mu
}

// Session returns the live session to the primary at hostport, or nil: for its Stats, say.
func (t *Transport) Session(hostport string) kwik.Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	cs := t.mu.sessions[hostport]
	if cs == nil {
		return nil
	}
	select {
	case <-cs.ready:
		return cs.sess
	default:
		return nil
	}
}

// session returns a live session to addr, dialing one if there is none, and counts an
// exchange on it (done must be called once it ends).
func (t *Transport) session(ctx context.Context, addr string) (*clientSession, error) {
	for {
		t.mu.Lock()
		if t.mu.closed {
			t.mu.Unlock()
			return nil, ErrTransportClosed
		}
		if t.mu.ctx == nil {
			t.mu.ctx, t.mu.cancel = context.WithCancel(context.Background())
			t.mu.sessions = map[string]*clientSession{}
		}
		cs := t.mu.sessions[addr]
		if cs == nil {
			cs = &clientSession{ready: make(chan struct{})}
			t.mu.sessions[addr] = cs
			dctx := t.mu.ctx
			t.dials.Go(func() { t.dial(dctx, addr, cs) })
		}
		cs.active++
		t.mu.Unlock()
		select {
		case <-cs.ready:
		case <-ctx.Done():
			t.done(cs)
			return nil, ctx.Err()
		}
		if cs.err != nil {
			t.done(cs)
			return nil, cs.err
		}
		if cs.sess.Context().Err() == nil {
			return cs, nil
		}
		// The session ended: forget it and dial again.
		t.mu.Lock()
		cs.active--
		if t.mu.sessions[addr] == cs {
			delete(t.mu.sessions, addr)
		}
		t.mu.Unlock()
	}
}

// dial opens the session to addr for cs. A failed dial is forgotten: the next request dials
// again.
func (t *Transport) dial(ctx context.Context, addr string, cs *clientSession) {
	dial := t.Dial
	if dial == nil {
		dial = kwik.Dial
	}
	tc := t.TLSClientConfig
	if tc == nil {
		tc = &tls.Config{}
	}
	cs.sess, cs.err = dial(ctx, addr, tc.Clone(), t.Config)
	t.mu.Lock()
	if cs.err != nil {
		cs.err = fmt.Errorf("kwikhttp: dialing %s: %w", addr, cs.err)
		if t.mu.sessions[addr] == cs {
			delete(t.mu.sessions, addr)
		}
	} else if t.mu.closed {
		cs.sess.Close()
	}
	t.mu.Unlock()
	close(cs.ready)
}

// done ends an exchange on cs.
func (t *Transport) done(cs *clientSession) {
	t.mu.Lock()
	cs.active--
	t.mu.Unlock()
}

// CloseIdleConnections closes the sessions on which no exchange is under way.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	var idle []kwik.Session
	for addr, cs := range t.mu.sessions {
		select {
		case <-cs.ready:
		default:
			continue
		}
		if cs.active == 0 && cs.sess != nil {
			idle = append(idle, cs.sess)
			delete(t.mu.sessions, addr)
		}
	}
	t.mu.Unlock()
	for _, s := range idle {
		s.Close()
	}
}

// Close closes every session, and returns once the dials under way have ended. Requests
// after it fail with ErrTransportClosed.
func (t *Transport) Close() error {
	t.mu.Lock()
	t.mu.closed = true
	if t.mu.cancel != nil {
		t.mu.cancel()
	}
	var all []*clientSession
	for _, cs := range t.mu.sessions {
		all = append(all, cs)
	}
	t.mu.sessions = nil
	t.mu.Unlock()
	t.dials.Wait()
	for _, cs := range all {
		if cs.sess != nil {
			cs.sess.Close()
		}
	}
	return nil
}

// RoundTrip sends req on a new stream of the session to its URL's host and returns the
// response, whose Body reads the stream (aggregated from every server of the session).
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	closeBody := func() {
		if req.Body != nil {
			req.Body.Close()
		}
	}
	if req.URL == nil {
		closeBody()
		return nil, errors.New("kwikhttp: nil Request.URL")
	}
	if req.URL.Scheme != "https" && req.URL.Scheme != "kwik" {
		closeBody()
		return nil, fmt.Errorf("kwikhttp: unsupported protocol scheme %q", req.URL.Scheme)
	}
	if req.URL.Host == "" {
		closeBody()
		return nil, errors.New("kwikhttp: no Host in request URL")
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(strings.Trim(req.URL.Hostname(), "[]"), "443")
	}
	ctx := req.Context()
	var cs *clientSession
	var st kwik.Stream
	for try := 0; ; try++ {
		var err error
		if cs, err = t.session(ctx, addr); err != nil {
			closeBody()
			return nil, err
		}
		if st, err = cs.sess.OpenStreamSync(ctx); err == nil {
			break
		}
		t.done(cs)
		if ctx.Err() != nil {
			closeBody()
			return nil, ctx.Err()
		}
		// A session that ended since it was found (its idle timeout, say) is dialed again,
		// once: nothing of the request has been sent.
		if try > 0 || cs.sess.Context().Err() == nil {
			closeBody()
			return nil, fmt.Errorf("kwikhttp: %w", err)
		}
	}
	ex := &exchange{t: t, cs: cs, st: st, ctx: ctx}
	ex.stop = context.AfterFunc(ctx, func() {
		st.CancelRead(CodeCanceled)
		st.CancelWrite(CodeCanceled)
	})
	if req.Body == nil || req.Body == http.NoBody {
		ex.writeErr = writeRequest(st, req)
		if ex.writeErr != nil {
			ex.abort()
			return nil, ex.err(ex.writeErr)
		}
	} else {
		// The body goes while the response comes, as with net/http: a server may answer
		// before it has read it all.
		ex.written = make(chan struct{})
		go func() {
			defer close(ex.written)
			if err := writeRequest(st, req); err != nil {
				ex.writeErr = err
				st.CancelWrite(CodeCanceled)
			}
		}()
	}
	maxHeader := t.MaxResponseHeaderBytes
	if maxHeader <= 0 {
		maxHeader = 1 << 20
	}
	ex.lr = &io.LimitedReader{R: st, N: maxHeader}
	br := bufio.NewReaderSize(ex.lr, 16<<10)
	var resp *http.Response
	var err error
	for {
		resp, err = http.ReadResponse(br, req)
		if err != nil {
			ex.abort()
			if ex.written != nil {
				<-ex.written
			}
			if ex.writeErr != nil && ctx.Err() == nil {
				return nil, ex.err(ex.writeErr)
			}
			return nil, ex.err(fmt.Errorf("reading the response: %w", err))
		}
		// 1xx responses precede the final one (101 is not supported).
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	ex.lr.N = 1<<63 - 1
	ex.body = resp.Body
	ex.verify = newDigestCheck(resp)
	resp.Body = ex
	return resp, nil
}

// writeRequest writes req on st and closes st's write side.
func writeRequest(st kwik.Stream, req *http.Request) error {
	bw := bufio.NewWriterSize(st, 16<<10)
	if err := req.Write(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return st.Close()
}

// exchange is a response body: the rest of the stream.
type exchange struct {
	t        *Transport
	cs       *clientSession
	st       kwik.Stream
	ctx      context.Context
	stop     func() bool
	lr       *io.LimitedReader
	body     io.ReadCloser
	verify   *digestCheck
	written  chan struct{} // closed once the request's body is written; nil without a body
	writeErr error

	mu     sync.Mutex
	eof    bool
	closed bool
}

// err is what the exchange failed with: the context's error if it ended.
func (ex *exchange) err(err error) error {
	if ex.ctx.Err() != nil {
		return ex.ctx.Err()
	}
	var se *kwik.StreamError
	if errors.As(err, &se) {
		return fmt.Errorf("kwikhttp: the exchange was abandoned: %w", err)
	}
	return err
}

// abort abandons the stream both ways and ends the exchange.
func (ex *exchange) abort() {
	ex.st.CancelRead(CodeCanceled)
	ex.st.CancelWrite(CodeCanceled)
	ex.stop()
	ex.t.done(ex.cs)
}

func (ex *exchange) Read(p []byte) (int, error) {
	ex.mu.Lock()
	closed, eof := ex.closed, ex.eof
	ex.mu.Unlock()
	if closed {
		return 0, errors.New("kwikhttp: read on closed response body")
	}
	if eof {
		return 0, io.EOF
	}
	n, err := ex.body.Read(p)
	if n > 0 && ex.verify != nil {
		ex.verify.h.Write(p[:n])
	}
	if err == io.EOF {
		ex.mu.Lock()
		ex.eof = true
		ex.mu.Unlock()
		if ex.verify != nil && !ex.verify.ok() {
			return n, fmt.Errorf("%w (%s)", ErrDigestMismatch, ex.verify.field)
		}
		return n, io.EOF
	}
	if err != nil {
		err = ex.err(err)
	}
	return n, err
}

// Close ends the exchange; before the body's end, it tells the server to stop sending.
func (ex *exchange) Close() error {
	ex.mu.Lock()
	if ex.closed {
		ex.mu.Unlock()
		return nil
	}
	ex.closed = true
	eof := ex.eof
	ex.mu.Unlock()
	if !eof {
		ex.st.CancelRead(CodeCanceled)
	} else {
		// Read the stream's end, which follows the body at once.
		var one [1]byte
		ex.st.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := ex.lr.Read(one[:]); n > 0 || err != io.EOF {
			ex.st.CancelRead(CodeCanceled)
		}
	}
	if ex.written != nil {
		select {
		case <-ex.written:
		default:
			ex.st.CancelWrite(CodeCanceled)
			<-ex.written
		}
	}
	ex.stop()
	ex.t.done(ex.cs)
	return nil
}

// digestCheck checks a body against a sha-256 digest of its response's.
type digestCheck struct {
	field string
	want  []byte
	h     hash.Hash
}

func (d *digestCheck) ok() bool {
	return string(d.h.Sum(nil)) == string(d.want)
}

// newDigestCheck returns the check of resp's body against its sha-256 Content-Digest, or,
// for a 200 without content coding, its Repr-Digest; nil if it has neither.
func newDigestCheck(resp *http.Response) *digestCheck {
	if resp.Request != nil && resp.Request.Method == http.MethodHead {
		return nil
	}
	if want := sha256Field(resp.Header.Get("Content-Digest")); want != nil {
		return &digestCheck{field: "Content-Digest", want: want, h: sha256.New()}
	}
	if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Encoding") == "" {
		if want := sha256Field(resp.Header.Get("Repr-Digest")); want != nil {
			return &digestCheck{field: "Repr-Digest", want: want, h: sha256.New()}
		}
	}
	return nil
}

// sha256Field reads the sha-256 member of a digest field (RFC 9530: sha-256=:base64:).
func sha256Field(v string) []byte {
	for part := range strings.SplitSeq(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || !strings.EqualFold(k, "sha-256") {
			continue
		}
		val = strings.TrimSpace(val)
		if len(val) < 2 || val[0] != ':' || val[len(val)-1] != ':' {
			return nil
		}
		b, err := base64.StdEncoding.DecodeString(val[1 : len(val)-1])
		if err != nil || len(b) != sha256.Size {
			return nil
		}
		return b
	}
	return nil
}

// SHA256Field formats a sha-256 digest as a Content-Digest or Repr-Digest value (RFC 9530).
func SHA256Field(sum []byte) string {
	return "sha-256=:" + base64.StdEncoding.EncodeToString(sum) + ":"
}
