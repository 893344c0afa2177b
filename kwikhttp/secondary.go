package kwikhttp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kwik-go/kwik"
)

// serveSecondary answers the ranges delegated to this server in sess, at most MaxDelegations
// at once (and MaxRanges over every session, through ranges).
func (s *Server) serveSecondary(ctx context.Context, sess kwik.Session, ranges chan struct{}) {
	own := make(chan struct{}, orDefault(s.MaxDelegations, DefaultMaxDelegations))
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case own <- struct{}{}:
		case <-ctx.Done():
			return
		}
		select {
		case ranges <- struct{}{}:
		case <-ctx.Done():
			return
		}
		st, err := sess.AcceptStream(ctx)
		if err != nil {
			<-ranges
			return
		}
		wg.Go(func() {
			defer func() { <-ranges; <-own }()
			s.serveRange(ctx, sess, st)
		})
	}
}

// delegatedRange is what a delegation's request asks for: bytes [start, end] of a
// representation of total bytes that validator names.
type delegatedRange struct {
	start, end, total int64
	validator         string
}

// parseDelegation checks a delegation's request, as the primary makes them.
func parseDelegation(req *http.Request) (delegatedRange, error) {
	var d delegatedRange
	if req.Method != http.MethodGet {
		return d, fmt.Errorf("method %s", req.Method)
	}
	rng, ok := strings.CutPrefix(req.Header.Get("Range"), "bytes=")
	a, b, ok2 := strings.Cut(rng, "-")
	if !ok || !ok2 {
		return d, fmt.Errorf("range %q", req.Header.Get("Range"))
	}
	var err1, err2, err3 error
	d.start, err1 = strconv.ParseInt(a, 10, 64)
	d.end, err2 = strconv.ParseInt(b, 10, 64)
	d.total, err3 = strconv.ParseInt(req.Header.Get(headerRepresentationLength), 10, 64)
	d.validator = req.Header.Get("If-Range")
	if err1 != nil || err2 != nil || err3 != nil || d.start < 0 || d.end < d.start || d.end >= d.total || d.validator == "" {
		return d, errors.New("range, size or validator missing or out of bounds")
	}
	return d, nil
}

// serveRange answers one delegation: the handler's 206 body for the delegated range goes into
// it. Closing short (or without a byte) tells the primary what is missing: it sends it itself.
func (s *Server) serveRange(ctx context.Context, sess kwik.Session, st kwik.Stream) {
	defer st.Close()
	_ = st.SetReadDeadline(time.Now().Add(orDefault(s.ReadHeaderTimeout, DefaultReadHeaderTimeout)))
	req, err := http.ReadRequest(bufio.NewReader(io.LimitReader(st, maxDelegationRequest+1)))
	if err != nil {
		s.logf(slog.LevelWarn, "kwikhttp: bad delegation request", "session", sess.ID(), "err", err)
		return
	}
	d, err := parseDelegation(req)
	if err != nil {
		s.logf(slog.LevelWarn, "kwikhttp: bad delegation request", "session", sess.ID(), "err", err)
		return
	}
	req.Header.Del(headerRepresentationLength)
	req.RemoteAddr = sess.RemoteAddr().String()
	cs := sess.ConnectionState().TLS
	req.TLS = &cs
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(st.Context(), cancel)
	defer stop()
	w := &rangeWriter{st: st, d: d, header: http.Header{}, idle: orDefault(s.IdleTimeout, DefaultIdleTimeout)}
	func() {
		defer func() {
			if v := recover(); v != nil && v != http.ErrAbortHandler {
				s.logf(slog.LevelError, "kwikhttp: handler panicked on a delegation", "url", req.URL.String(), "panic", v)
			}
		}()
		s.handler().ServeHTTP(w, req.WithContext(hctx))
	}()
	switch {
	case w.refused != nil:
		s.logf(slog.LevelWarn, "kwikhttp: delegation not served", "session", sess.ID(), "url", req.URL.String(), "err", w.refused)
	case w.written < d.end-d.start+1:
		s.logf(slog.LevelInfo, "kwikhttp: delegation served short", "session", sess.ID(), "url", req.URL.String(),
			"written", w.written, "of", d.end-d.start+1, "err", w.err)
	}
}

// rangeWriter is a secondary's http.ResponseWriter for a delegation: it takes a 206 of exactly
// the delegated range of the primary's representation, and refuses anything else.
type rangeWriter struct {
	st          kwik.Stream
	d           delegatedRange
	header      http.Header
	idle        time.Duration
	wroteHeader bool
	refused     error // the replica's answer is not the range asked for
	err         error // a write failed
	written     int64
}

func (w *rangeWriter) Header() http.Header { return w.header }

func (w *rangeWriter) WriteHeader(code int) {
	if w.wroteHeader || code < 200 {
		return
	}
	w.wroteHeader = true
	h := w.header
	start, end, total, ok := parseContentRange(h.Get("Content-Range"))
	switch {
	case code != http.StatusPartialContent:
		w.refused = fmt.Errorf("status %d (the replica's representation differs?)", code)
	case !ok || start != w.d.start || end != w.d.end:
		w.refused = fmt.Errorf("Content-Range %q, not bytes %d-%d", h.Get("Content-Range"), w.d.start, w.d.end)
	case total != w.d.total:
		w.refused = fmt.Errorf("a representation of %d bytes, the primary's has %d", total, w.d.total)
	case h.Get("Content-Encoding") != "":
		w.refused = errors.New("a Content-Encoding")
	case strings.HasPrefix(w.d.validator, `"`) && h.Get("Etag") != w.d.validator:
		w.refused = fmt.Errorf("ETag %q, the primary's is %q", h.Get("Etag"), w.d.validator)
	case !strings.HasPrefix(w.d.validator, `"`) && h.Get("Last-Modified") != w.d.validator:
		w.refused = fmt.Errorf("Last-Modified %q, the primary's is %q", h.Get("Last-Modified"), w.d.validator)
	}
}

func (w *rangeWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.refused != nil {
		return 0, w.refused
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.written+int64(len(p)) > w.d.end-w.d.start+1 {
		w.err = http.ErrContentLength
		return 0, w.err
	}
	_ = w.st.SetWriteDeadline(time.Now().Add(w.idle))
	n, err := w.st.Write(p)
	w.written += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}
