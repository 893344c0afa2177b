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
	"sync/atomic"
	"time"

	"github.com/kwik-go/kwik"
)

// bufferBeforeCommit is how much of a body of unknown length the primary holds before it
// sends the headers: a handler that writes no more gets a Content-Length (and a sniffed
// Content-Type), as with net/http.
const bufferBeforeCommit = 2048

// maxDelegationRequest bounds the request a delegation carries (it must fit KWIK's smallest
// message): a longer URL or Host is served by the primary alone.
const maxDelegationRequest = 3 << 10

var errFinished = errors.New("kwikhttp: the response is finished")

// responseWriter is the primary's http.ResponseWriter for one exchange.
type responseWriter struct {
	srv  *Server
	ps   *primarySession
	st   kwik.Stream
	req  *http.Request
	ctx  context.Context // the session's: a fan-out outlives the stream's write side
	idle time.Duration
	out  *bufio.Writer

	header      http.Header
	status      int
	wroteHeader bool   // the handler chose the status
	committed   bool   // the status line and headers are on their way
	buf         []byte // body held before the commit
	clen        int64  // the declared Content-Length, -1 if none
	written     int64
	done        bool // the stream is finished (fanned out, or failed)
	err         error
}

func newResponseWriter(s *Server, ps *primarySession, st kwik.Stream, req *http.Request, idle time.Duration) *responseWriter {
	return &responseWriter{
		srv: s, ps: ps, st: st, req: req, ctx: ps.sess.Context(), idle: idle,
		out:    bufio.NewWriterSize(idleWriter{st, idle}, 16<<10),
		header: http.Header{}, clen: -1,
	}
}

// idleWriter is a stream whose every write must make progress within idle.
type idleWriter struct {
	st   kwik.Stream
	idle time.Duration
}

func (w idleWriter) Write(p []byte) (int, error) {
	_ = w.st.SetWriteDeadline(time.Now().Add(w.idle))
	return w.st.Write(p)
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("kwikhttp: invalid WriteHeader code %v", code))
	}
	if w.wroteHeader || w.committed {
		w.srv.logf(slog.LevelWarn, "kwikhttp: superfluous WriteHeader", "url", w.req.URL.String(), "code", code)
		return
	}
	if code < 200 {
		// Informational: on its way at once, and the final status follows.
		fmt.Fprintf(w.out, "HTTP/1.1 %03d %s\r\n", code, http.StatusText(code))
		writeHeader(w.out, w.header)
		w.out.WriteString("\r\n")
		if err := w.out.Flush(); err != nil {
			w.fail(err)
		}
		return
	}
	w.status, w.wroteHeader = code, true
	if cl := w.header.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.clen = v
		} else {
			w.header.Del("Content-Length")
		}
	}
}

// bodyAllowed says whether the response may have body bytes on the wire.
func (w *responseWriter) bodyAllowed() bool {
	return w.req.Method != http.MethodHead && w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.done {
		return 0, cmpOr(w.err, errFinished)
	}
	if w.status == http.StatusNoContent || w.status == http.StatusNotModified {
		return 0, http.ErrBodyNotAllowed
	}
	if w.req.Method == http.MethodHead {
		w.written += int64(len(p))
		return len(p), nil
	}
	if w.clen >= 0 && w.written+int64(len(p)) > w.clen {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.committed {
		if w.clen < 0 && len(w.buf)+len(p) <= bufferBeforeCommit {
			w.buf = append(w.buf, p...)
			return len(p), nil
		}
		if err := w.commit(false); err != nil {
			return 0, err
		}
	}
	if _, err := w.out.Write(p); err != nil {
		return 0, w.fail(err)
	}
	return len(p), nil
}

// commit writes the status line, the headers and the body held so far. final: the handler
// has returned, so the body held is the whole body.
func (w *responseWriter) commit(final bool) error {
	w.committed = true
	h := w.header
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	if w.bodyAllowed() {
		if _, ok := h["Content-Type"]; !ok && h.Get("Content-Encoding") == "" && len(w.buf) > 0 {
			h.Set("Content-Type", http.DetectContentType(w.buf))
		}
		if final && w.clen < 0 {
			w.clen = int64(len(w.buf))
			h.Set("Content-Length", strconv.Itoa(len(w.buf)))
		}
	}
	fmt.Fprintf(w.out, "HTTP/1.1 %03d %s\r\n", w.status, http.StatusText(w.status))
	writeHeader(w.out, h)
	w.out.WriteString("\r\n")
	_, err := w.out.Write(w.buf) // the bufio.Writer's first error sticks: this one says it
	w.buf = nil
	if err != nil {
		return w.fail(err)
	}
	return nil
}

// writeHeader writes h without the hop-by-hop fields that the stream's framing replaces.
func writeHeader(out *bufio.Writer, h http.Header) {
	h.WriteSubset(out, map[string]bool{"Transfer-Encoding": true, "Connection": true, "Keep-Alive": true, "Trailer": true})
}

// fail abandons the response: the client's Read fails instead of seeing a short body end.
func (w *responseWriter) fail(err error) error {
	if !w.done {
		w.done, w.err = true, err
		w.st.CancelWrite(CodeIncomplete)
		w.srv.logf(slog.LevelInfo, "kwikhttp: response abandoned", "url", w.req.URL.String(), "err", err)
	}
	return err
}

// Flush sends what is buffered (http.Flusher).
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush, with its error (for http.ResponseController).
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.done {
		return cmpOr(w.err, errFinished)
	}
	if !w.committed {
		if err := w.commit(false); err != nil {
			return err
		}
	}
	if err := w.out.Flush(); err != nil {
		return w.fail(err)
	}
	return nil
}

// SetWriteDeadline and SetReadDeadline are for http.ResponseController.
func (w *responseWriter) SetWriteDeadline(t time.Time) error { return w.st.SetWriteDeadline(t) }
func (w *responseWriter) SetReadDeadline(t time.Time) error  { return w.st.SetReadDeadline(t) }

// finish ends the response once the handler has returned (ok: without panicking).
func (w *responseWriter) finish(ok bool) {
	if w.done {
		return
	}
	if !ok {
		w.fail(errors.New("the handler panicked"))
		return
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		if err := w.commit(true); err != nil {
			return
		}
	}
	if err := w.out.Flush(); err != nil {
		w.fail(err)
		return
	}
	if w.clen >= 0 && w.written < w.clen && w.bodyAllowed() {
		w.fail(fmt.Errorf("the handler wrote %d bytes of a Content-Length of %d", w.written, w.clen))
		return
	}
	w.done = true
	w.st.Close()
}

// writerOnly hides ReadFrom, so that io.Copy into it uses Write.
type writerOnly struct{ io.Writer }

// ReadFrom is how http.ServeContent and io.Copy send a body: a large one of known size from a
// seekable source is fanned out over the session's secondaries.
func (w *responseWriter) ReadFrom(r io.Reader) (int64, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if f, ok := w.fanoutPlan(r); ok {
		return w.fanout(f)
	}
	return io.CopyBuffer(writerOnly{w}, r, make([]byte, 32<<10))
}

// fanoutPlan is what a fan-out needs to know of a body.
type fanoutPlan struct {
	src       io.ReaderAt
	n         int64  // the body's size
	start     int64  // its first byte in the representation
	total     int64  // the representation's size
	validator string // strong ETag, or Last-Modified
	uri, host string
}

// fanoutPlan says whether the body that r holds may be fanned out, and how.
func (w *responseWriter) fanoutPlan(r io.Reader) (fanoutPlan, bool) {
	lr, ok := r.(*io.LimitedReader)
	s := w.srv
	threshold := orDefault(s.FanoutThreshold, DefaultFanoutThreshold)
	if !ok || w.committed || w.done || w.written != 0 || threshold < 0 || lr.N < threshold ||
		w.req.Method != http.MethodGet || (w.status != http.StatusOK && w.status != http.StatusPartialContent) ||
		w.clen != lr.N || w.header.Get("Content-Encoding") != "" {
		return fanoutPlan{}, false
	}
	if len(s.Secondaries) == 0 && len(secondaryPaths(w.ps.sess)) == 0 {
		return fanoutPlan{}, false
	}
	seeker, ok := lr.R.(io.Seeker)
	if !ok {
		return fanoutPlan{}, false
	}
	f := fanoutPlan{n: lr.N, total: lr.N, uri: w.req.RequestURI, host: w.req.Host}
	if w.status == http.StatusPartialContent {
		start, end, total, ok := parseContentRange(w.header.Get("Content-Range"))
		if !ok || end-start+1 != lr.N {
			return fanoutPlan{}, false
		}
		f.start, f.total = start, total
	}
	if etag := w.header.Get("Etag"); strings.HasPrefix(etag, `"`) {
		f.validator = etag
	} else if lm := w.header.Get("Last-Modified"); lm != "" {
		f.validator = lm
	} else {
		return fanoutPlan{}, false
	}
	if len(delegationRequest(f, 0, 1)) > maxDelegationRequest || strings.ContainsAny(f.uri+f.host, " \r\n\t") || strings.ContainsAny(f.validator, "\r\n") || f.uri == "" {
		return fanoutPlan{}, false
	}
	pos, err := seeker.Seek(0, io.SeekCurrent)
	if err != nil {
		return fanoutPlan{}, false
	}
	if ra, ok := lr.R.(io.ReaderAt); ok {
		f.src = io.NewSectionReader(ra, pos, lr.N)
	} else if rs, ok := lr.R.(io.ReadSeeker); ok {
		f.src = &seekReaderAt{rs: rs, base: pos}
	} else {
		return fanoutPlan{}, false
	}
	return f, true
}

// fanout sends the headers, has the secondaries join if this is the session's first
// fan-out, and serves the body with kwik.Fanout over the session's secondaries, active or
// still joining: the body does not wait for them.
func (w *responseWriter) fanout(f fanoutPlan) (int64, error) {
	if err := w.FlushError(); err != nil {
		return 0, err
	}
	s := w.srv
	w.ps.join(s)
	paths := secondaryPaths(w.ps.sess)
	if len(paths) == 0 {
		return io.CopyBuffer(writerOnly{w}, io.NewSectionReader(f.src, 0, f.n), make([]byte, 32<<10))
	}
	var opts kwik.FanoutOptions
	if s.Fanout != nil {
		opts = *s.Fanout
	}
	opts.Request = func(off, n int64) []byte { return delegationRequest(f, off, n) }
	opts.Joining = nil
	// A client that withholds credit stalls the primary's own writes, which then read
	// nothing more from the source: that ends the transfer after idle.
	src := &idleReaderAt{ra: f.src}
	src.touch()
	watch := watchIdle(src, w.idle, func() { w.st.CancelWrite(CodeIncomplete) })
	res, err := kwik.Fanout(w.ctx, w.st, src, f.n, paths, &opts)
	watch.Stop()
	w.done, w.written = true, f.n
	if s.OnFanout != nil {
		s.OnFanout(w.req, res, err)
	}
	if err != nil {
		w.err = err
		w.st.CancelWrite(CodeIncomplete)
		s.logf(slog.LevelWarn, "kwikhttp: fan-out failed", "session", w.ps.sess.ID(), "url", w.req.URL.String(), "err", err)
		return 0, err
	}
	s.logf(slog.LevelInfo, "kwikhttp: fanned out", "session", w.ps.sess.ID(), "url", w.req.URL.String(),
		"bytes", f.n, "by_path", res.Bytes, "refilled", res.Refilled)
	return f.n, nil
}

// secondaryPaths are the IDs of the session's secondary paths, active or still joining.
func secondaryPaths(sess kwik.Session) []string {
	var ids []string
	for _, p := range sess.GetAllPaths() {
		if !p.IsPrimary && (p.Status == kwik.PathActive || p.Status == kwik.PathConnecting) {
			ids = append(ids, p.PathID)
		}
	}
	return ids
}

// Headers of a delegation's request.
const (
	// headerRepresentationLength carries the size of the whole representation, which the
	// secondary's Content-Range must repeat.
	headerRepresentationLength = "Kwik-Representation-Length"
)

// delegationRequest is the request for bytes [off, off+n) of the body f describes: an
// HTTP/1.1 GET of the same URL for those bytes of the representation, if it is still the
// one the validator names.
func delegationRequest(f fanoutPlan, off, n int64) []byte {
	a := f.start + off
	return fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nRange: bytes=%d-%d\r\nIf-Range: %s\r\n%s: %d\r\n\r\n",
		f.uri, f.host, a, a+n-1, f.validator, headerRepresentationLength, f.total)
}

// parseContentRange reads "bytes a-b/total".
func parseContentRange(s string) (start, end, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	start, err1 = strconv.ParseInt(a, 10, 64)
	end, err2 = strconv.ParseInt(b, 10, 64)
	total, err3 = strconv.ParseInt(tot, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || start < 0 || end < start || end >= total {
		return 0, 0, 0, false
	}
	return start, end, total, true
}

// seekReaderAt reads at offsets of a ReadSeeker, one read at a time.
type seekReaderAt struct {
	mu   sync.Mutex
	rs   io.ReadSeeker
	base int64
}

func (s *seekReaderAt) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.rs.Seek(s.base+off, io.SeekStart); err != nil {
		return 0, err
	}
	return io.ReadFull(s.rs, p)
}

// idleReaderAt remembers when it was last read.
type idleReaderAt struct {
	ra   io.ReaderAt
	last atomic.Int64 // unix nanoseconds
}

func (r *idleReaderAt) touch() { r.last.Store(time.Now().UnixNano()) }

func (r *idleReaderAt) ReadAt(p []byte, off int64) (int, error) {
	r.touch()
	return r.ra.ReadAt(p, off)
}

// idleWatch calls stall once its reader has not been read for idle.
type idleWatch struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func watchIdle(r *idleReaderAt, idle time.Duration, stall func()) *idleWatch {
	w := &idleWatch{}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t = time.AfterFunc(idle, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.stopped {
			return
		}
		if since := time.Since(time.Unix(0, r.last.Load())); since < idle {
			w.t.Reset(idle - since)
			return
		}
		w.stopped = true
		stall()
	})
	return w
}

// Stop stops the watch; stall is not called after it returns.
func (w *idleWatch) Stop() {
	w.mu.Lock()
	w.stopped = true
	w.t.Stop()
	w.mu.Unlock()
}

func cmpOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}
