package main

// The orchestration between the primary and its secondaries travels as raw data: each
// message is one JSON object sealed by kwik.SendOrder, which the client relays to the server
// on the target path without being able to read, alter or forge it (plain raw data would let
// any client order a secondary about, and RawData.From is only what the client claims); the
// receiver opens it with kwik.OpenOrder, which also gives the true sender.
//
//	primary → secondary   {"type":"prepare","id":7,"object":"large.bin","size":…,"seed":…}
//	secondary → primary   {"type":"ready","id":7,"object":"large.bin","sha256":"…"}
//	                      or {"type":"error","id":7,"object":"large.bin","error":"…"}
//
// A secondary knows only its own path, so it cannot name the primary's path by itself: it
// answers to the From of the opened prepare, which is the primary's path ID. The primary waits
// for the answers up to a timeout and delegates ranges only to the secondaries that answered
// ready with the digest of its own copy. Then the delegations (kwik.Fanout) carry a request
// that names the object: FanoutRequest's 16 bytes followed by the object's name.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/examples/client/fetch"
)

// message is one orchestration message; Type says which fields are set.
type message struct {
	Type   string `json:"type"` // "prepare", "ready" or "error"
	ID     uint64 `json:"id"`   // set by a prepare, echoed by its answer
	Object string `json:"object"`
	Size   int64  `json:"size,omitempty"` // prepare: how to generate the object
	Seed   uint64 `json:"seed,omitempty"`
	SHA256 string `json:"sha256,omitempty"` // ready: the digest of the secondary's copy
	Error  string `json:"error,omitempty"`  // error: why the secondary cannot serve it
}

// rangeRequest is a delegation's request: bytes [off, off+n) of the object name.
func rangeRequest(name string, off, n int64) []byte {
	return append(kwik.FanoutRequest(off, n), name...)
}

// maxRangeRequest bounds a request a secondary reads.
const maxRangeRequest = 16 + 1024

func parseRangeRequest(b []byte) (name string, off, n int64, err error) {
	if len(b) < 16 {
		return "", 0, 0, errors.New("short range request")
	}
	off, n, err = kwik.ParseFanoutRequest(b[:16])
	return string(b[16:]), off, n, err
}

// ---- primary ----

// primarySession is the primary's side of one client session. Its streams are served one
// after the other, so a single reader of raw data sees every answer.
type primarySession struct {
	srv    *server
	sess   kwik.Session
	log    *slog.Logger
	paths  []string            // path IDs of the secondaries the client joined, in order
	ready  map[string][]string // object name → the paths that answered ready for it
	nextID uint64
}

// servePrimary runs one client session on the primary: it has the client join every
// secondary, then answers the client's requests until the session ends.
func (s *server) servePrimary(ctx context.Context, sess kwik.Session) {
	ps := &primarySession{srv: s, sess: sess, log: s.log.With("session", sess.ID()[:8]), ready: make(map[string][]string)}
	ps.log.Info("primary: new session", "client", sess.RemoteAddr())
	ps.addSecondaries()
	for {
		st, err := sess.AcceptStream(ctx)
		if err != nil {
			ps.log.Info("primary: session over", "reason", err, "cause", context.Cause(sess.Context()))
			return
		}
		ps.serve(ctx, st)
	}
}

// addSecondaries asks the client to join every secondary, all at once.
func (ps *primarySession) addSecondaries() {
	errs := make([]error, len(ps.srv.secondaries))
	var wg sync.WaitGroup
	for i, sec := range ps.srv.secondaries {
		wg.Go(func() { errs[i] = ps.sess.AddPath(sec.addr) })
	}
	wg.Wait()
	// AddPath does not return the new path's ID: find it by the address it was given.
	byAddr := make(map[string]string)
	for _, p := range ps.sess.GetActivePaths() {
		if !p.IsPrimary {
			byAddr[p.Address] = p.PathID
		}
	}
	for i, sec := range ps.srv.secondaries {
		id, ok := byAddr[sec.addr]
		switch {
		case errs[i] != nil:
			ps.log.Warn("primary: the client could not join a secondary", "secondary", sec.addr, "err", errs[i])
		case !ok:
			ps.log.Warn("primary: a secondary's path is no longer active", "secondary", sec.addr)
		default:
			ps.log.Info("primary: secondary joined", "secondary", sec.addr, "path", id)
			ps.paths = append(ps.paths, id)
		}
	}
}

// serve answers one request.
func (ps *primarySession) serve(ctx context.Context, st kwik.Stream) {
	refuse := func(reason string) {
		ps.log.Info("primary: request refused", "reason", reason)
		writeHeader(st, fetch.Header{Error: reason})
		st.Close()
	}
	// The request is one line, then the client closes its side.
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(io.LimitReader(st, fetch.MaxLine))
	if err != nil {
		refuse("reading the request: " + err.Error())
		return
	}
	var req fetch.Request
	if err := json.Unmarshal(b, &req); err != nil {
		refuse("bad request")
		return
	}
	sp, ok := ps.srv.catalogue[req.Object]
	if !ok {
		refuse(fmt.Sprintf("no object %q; there are %s", req.Object, strings.Join(slices.Sorted(maps.Keys(ps.srv.catalogue)), ", ")))
		return
	}
	obj, err := ps.srv.objects.get(req.Object, sp)
	if err != nil {
		refuse(err.Error())
		return
	}
	ready := ps.prepare(ctx, obj)

	// The digest goes first, so that the client can check what every server sent.
	if err := writeHeader(st, fetch.Header{Object: obj.name, Size: int64(len(obj.data)), SHA256: obj.sum}); err != nil {
		ps.log.Warn("primary: writing the header", "err", err)
		return
	}
	start := time.Now()
	res, err := kwik.Fanout(ctx, st, bytes.NewReader(obj.data), int64(len(obj.data)), ready, &kwik.FanoutOptions{
		Request: func(off, n int64) []byte { return rangeRequest(obj.name, off, n) },
	})
	if appErr := (*kwik.ApplicationError)(nil); errors.As(err, &appErr) && appErr.Remote {
		// A client that closes its session as soon as it has read everything can do so
		// before its last acknowledgements reach the primary: Fanout then reports the close.
		ps.log.Info("primary: the client closed the session before acknowledging every range", "object", obj.name, "err", err)
		return
	}
	if err != nil {
		ps.log.Warn("primary: transfer failed", "object", obj.name, "err", err)
		return
	}
	attrs := []any{"object", obj.name, "elapsed", time.Since(start).Round(time.Millisecond), "primary", res.Bytes[""]}
	for _, p := range ready {
		attrs = append(attrs, "path "+p, res.Bytes[p])
	}
	if res.Refilled > 0 {
		attrs = append(attrs, "refilled", res.Refilled)
	}
	ps.log.Info("primary: served", attrs...)
}

// prepare asks every secondary to prepare obj and returns the paths of those that answered
// ready with obj's digest within the timeout. An answer is remembered for the session.
func (ps *primarySession) prepare(ctx context.Context, obj *object) []string {
	if ready, ok := ps.ready[obj.name]; ok {
		return ready
	}
	ps.nextID++
	id := ps.nextID
	msg, _ := json.Marshal(message{Type: "prepare", ID: id, Object: obj.name, Size: obj.spec.Size, Seed: obj.spec.Seed})
	waiting := make(map[string]bool)
	for _, p := range ps.paths {
		// SendRawData returns once the client has relayed the message (or refused to: an
		// unknown or dead path).
		if err := kwik.SendOrder(ps.sess, msg, p); err != nil {
			ps.log.Warn("primary: prepare not relayed", "path", p, "err", err)
			continue
		}
		waiting[p] = true
	}
	ctx, cancel := context.WithTimeout(ctx, ps.srv.opts.readyTimeout)
	defer cancel()
	isReady := make(map[string]bool)
	for len(waiting) > 0 {
		rd, err := ps.sess.ReceiveRawData(ctx)
		if err != nil {
			break // the timeout, or the session is over
		}
		if rd, err = kwik.OpenOrder(ps.sess, rd); err != nil {
			ps.log.Debug("primary: raw data that is no order ignored", "claimed_from", rd.From)
			continue
		}
		var m message
		if err := json.Unmarshal(rd.Data, &m); err != nil || m.ID != id || !waiting[rd.From] {
			// A late answer to an earlier prepare, or nothing we asked for.
			ps.log.Debug("primary: raw data ignored", "from", rd.From, "bytes", len(rd.Data))
			continue
		}
		delete(waiting, rd.From)
		switch {
		case m.Type == "ready" && m.SHA256 == obj.sum:
			ps.log.Info("primary: secondary ready", "path", rd.From, "object", obj.name, "sha256", m.SHA256[:16])
			isReady[rd.From] = true
		case m.Type == "ready":
			ps.log.Warn("primary: secondary's copy differs, not using it", "path", rd.From, "sha256", m.SHA256)
		default:
			ps.log.Warn("primary: secondary cannot serve", "path", rd.From, "answer", m.Type, "err", m.Error)
		}
	}
	for p := range waiting {
		ps.log.Warn("primary: no answer within the timeout, not using it", "path", p, "timeout", ps.srv.opts.readyTimeout)
	}
	var ready []string
	for _, p := range ps.paths {
		if isReady[p] {
			ready = append(ready, p)
		}
	}
	ps.ready[obj.name] = ready
	return ready
}

func writeHeader(st kwik.Stream, h fetch.Header) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	_, err = st.Write(append(b, '\n'))
	return err
}

// ---- secondary ----

// serveSecondary runs one session on a secondary: it answers prepare messages and serves the
// delegated ranges of the objects it prepared, until the session ends.
func (sec *secondary) serveSecondary(ctx context.Context, sess kwik.Session, log *slog.Logger) {
	log = log.With("secondary", sec.addr, "session", sess.ID()[:8])
	var (
		mu       sync.Mutex
		prepared = make(map[string]*object) // guarded by mu
	)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer sess.Close() // ends the raw-data loop and the ranges in progress
	wg.Go(func() {
		for {
			rd, err := sess.ReceiveRawData(ctx)
			if err != nil {
				return
			}
			if rd, err = kwik.OpenOrder(sess, rd); err != nil {
				log.Debug("secondary: raw data that is no order ignored", "bytes", len(rd.Data))
				continue
			}
			var m message
			if err := json.Unmarshal(rd.Data, &m); err != nil || m.Type != "prepare" {
				log.Debug("secondary: raw data ignored", "from", rd.From, "bytes", len(rd.Data))
				continue
			}
			if sec.silent {
				log.Info("secondary: prepare ignored (-silent)", "object", m.Object)
				continue
			}
			answer := message{Type: "ready", ID: m.ID, Object: m.Object}
			obj, err := sec.objects.get(m.Object, spec{Size: m.Size, Seed: m.Seed})
			if err != nil {
				answer.Type, answer.Error = "error", err.Error()
			} else {
				mu.Lock()
				prepared[m.Object] = obj
				mu.Unlock()
				answer.SHA256 = obj.sum
			}
			b, _ := json.Marshal(answer)
			// rd.From is the primary's path ID: the secondary's only way to address it.
			if err := kwik.SendOrder(sess, b, rd.From); err != nil {
				log.Warn("secondary: answer not relayed", "err", err)
				continue
			}
			log.Info("secondary: answered", "object", m.Object, "answer", answer.Type)
		}
	})
	for {
		st, err := sess.AcceptStream(ctx) // one stream per delegation
		if err != nil {
			return
		}
		wg.Go(func() {
			// Closing without writing everything tells the primary, through the client, what
			// is missing, and it sends that itself.
			defer st.Close()
			req, err := io.ReadAll(io.LimitReader(st, maxRangeRequest))
			if err != nil {
				return
			}
			name, off, n, err := parseRangeRequest(req)
			if err != nil {
				log.Warn("secondary: bad range request", "err", err)
				return
			}
			mu.Lock()
			obj := prepared[name]
			mu.Unlock()
			if obj == nil || off > int64(len(obj.data)) {
				log.Warn("secondary: range of an object not prepared", "object", name)
				return
			}
			st.Write(obj.data[off:min(off+n, int64(len(obj.data)))])
		})
	}
}
