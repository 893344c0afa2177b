package kwik

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// The client's side of paths: it joins the secondaries the primary names (AddPathRequest),
// closes the ones it removes, notices their deaths and rejoins them as Config.PathRetry says,
// asking the primary for a fresh token each time.

// maxPathHistory bounds the paths a client session records (GetAllPaths): each join the
// primary asks for is a record, however fast it fails, and the primary asks at will.
const maxPathHistory = 1024

// maxAddressLen bounds the address a primary may ask the client to join: a host name and a
// port fit with room to spare.
const maxAddressLen = 512

// join (client) connects to a secondary at the primary's request, in the background, and
// answers the primary when done.
func (s *session) join(req *pb.AddPathRequest) {
	fail := func(code ErrorCode, msg string) {
		s.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_AddPathResponse{AddPathResponse: &pb.AddPathResponse{
			PathId: echoID(req.PathId), ErrorCode: pb.ErrorCode(code), ErrorMessage: msg,
		}}})
	}
	if req.SessionId != s.id || !validID(req.PathId, 8) {
		fail(CodeAuthFailed, "request names another session or a malformed path ID")
		return
	}
	if len(req.TargetAddress) > maxAddressLen {
		fail(CodeInvalidFrame, "target address too long")
		return
	}
	var rec *pathRecord
	var code ErrorCode
	var refusal string
	if s.runOnLoop(func() {
		if s.paths.byID[req.PathId] != nil {
			code, refusal = CodeInvalidFrame, "path ID already in use"
			return
		}
		if len(s.paths.records) >= maxPathHistory {
			code, refusal = CodeInternal, "the session has tried too many paths"
			return
		}
		live := 0
		for _, r := range s.paths.records {
			if r.status == PathActive || r.status == PathConnecting {
				live++
			}
		}
		if live >= s.conf.MaxPaths {
			code, refusal = CodeInternal, "the client allows no more paths (Config.MaxPaths)"
			return
		}
		rec = &pathRecord{id: req.PathId, address: req.TargetAddress, status: PathConnecting, createdAt: time.Now()}
		s.paths.records = append(s.paths.records, rec)
		s.paths.byID[rec.id] = rec
	}) != nil {
		return // the session is closing
	}
	if rec == nil {
		fail(code, refusal)
		return
	}
	s.holdJoining(rec.id) // before the next frame: the primary may delegate to it at once

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, s.conf.HandshakeTimeout)
		err := allowPath(ctx, s.conf.AllowPath, req.TargetAddress)
		if err == nil {
			err = s.dialSecondary(ctx, rec, req.JoinToken, PathConnecting)
		}
		cancel()
		s.releaseJoining(rec.id, err)
		if err == nil {
			s.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_AddPathResponse{AddPathResponse: &pb.AddPathResponse{
				PathId: rec.id, Success: true,
			}}})
			return
		}
		_ = s.runOnLoop(func() {
			if rec.status == PathConnecting {
				rec.setStatus(PathDead, err.Error())
			}
		})
		s.log.Info("kwik: join failed", "path", rec.id, "address", rec.address, "err", err)
		fail(joinFailure(err))
	}()
}

// allowPath asks the client's policy (Config.AllowPath, if set) about address, here and not
// on the control reader: a policy may resolve the address. The policy runs on a goroutine of
// its own, which the join waits for until ctx ends (the handshake timeout, or the session's
// end): a policy that does not return fails the join, and holds neither the session's Close
// nor its goroutines; its own goroutine ends when it returns.
func allowPath(ctx context.Context, policy func(string) error, address string) error {
	if policy == nil {
		return nil
	}
	verdict := make(chan error, 1)
	go func() { verdict <- policy(address) }()
	select {
	case err := <-verdict:
		if err != nil {
			return &Error{Code: CodeAuthFailed, Message: "the client's policy refuses " + address + ": " + err.Error()}
		}
		return nil
	case <-ctx.Done():
		return &Error{Code: CodePathDead, Message: "the client's policy did not answer for " + address + ": " + context.Cause(ctx).Error()}
	}
}

// joinFailure is what a failed join tells the primary: a code and a generic reason, never the
// dial's own error, lest a primary use its clients to scan their networks (which ports are
// open, which certificate names and protocols answer). The client's PathInfo keeps the detail.
func joinFailure(err error) (ErrorCode, string) {
	var ke *Error
	if errors.As(err, &ke) {
		switch ke.Code {
		case CodeAuthFailed:
			return CodeAuthFailed, "the join was refused"
		case CodeInvalidFrame, CodePacketTooLarge:
			return CodeInvalidFrame, "the secondary broke the protocol"
		}
	}
	return CodePathDead, "the client could not join the secondary"
}

// dialSecondary opens and authenticates the path to a secondary: a new path in state from
// (PathConnecting), or a dead one being rejoined (PathDead), which keeps its counters.
func (s *session) dialSecondary(ctx context.Context, rec *pathRecord, token []byte, from PathStatus) error {
	tc := s.tlsConf
	if s.conf.PathTLS != nil {
		c, err := tlsConfig(s.conf.PathTLS(rec.address, s.tlsConf.Clone()))
		if err != nil {
			return err
		}
		tc = c
	}
	conn, err := quicNet.dial(ctx, rec.address, tc, s.conf.QUIC)
	if err != nil {
		return err
	}
	var then func(*quic.Stream) error
	if from == PathConnecting {
		// The ranges the primary delegated while the client was joining go right behind the
		// authentication: the secondary starts on them as soon as it has taken it, a round
		// trip before the client hears its answer.
		then = func(cs *quic.Stream) error { return s.presendHeld(rec.id, cs) }
	}
	p, err := clientAuthenticate(ctx, conn, s.conf, &pb.AuthenticationRequest{
		SessionId: s.id, Credentials: token, PathId: rec.id, TargetAddress: rec.address,
	}, then)
	if err == nil && (p.sessionID != s.id || p.pathID != rec.id) {
		err = &Error{Code: CodeAuthFailed, Message: "the secondary answered for another session or path"}
	}
	if err != nil {
		if s.ctx.Err() != nil {
			// The session ended mid-join: tell the secondary so, as below, rather than
			// KWIK_INTERNAL.
			_ = conn.CloseWithError(kwikCodeBase+ApplicationErrorCode(CodePathRemoved), "session closed")
		} else {
			closeConnWith(conn, err)
		}
		return err
	}
	path := newPath(s, conn, rec.id, rec.address, false, false, p.stream, p.reader, p.peer)
	joined := false
	_ = s.runOnLoop(func() {
		if s.ctx.Err() != nil || rec.status != from {
			return
		}
		if old := rec.p; old != nil {
			path.stats.bytesSent.Store(old.stats.bytesSent.Load())
			path.stats.bytesReceived.Store(old.stats.bytesReceived.Load())
			path.stats.packetsSent.Store(old.stats.packetsSent.Load())
			path.stats.packetsReceived.Store(old.stats.packetsReceived.Load())
			path.stats.packetsAcked.Store(old.stats.packetsAcked.Load())
		}
		rec.p = path
		path.rec = rec
		rec.setStatus(PathActive, "")
		joined = true
	})
	if !joined {
		_ = conn.CloseWithError(kwikCodeBase+ApplicationErrorCode(CodePathRemoved), "session closed")
		return errors.New("kwik: the session closed, or the path was removed, while joining")
	}
	// Before the path reads any data: the secondary may already be sending those ranges.
	if err := s.recordPresented(rec.id, path); err != nil {
		s.closeLocal(err)
		return err
	}
	path.start()
	return nil
}

// removePath (client) closes a secondary path at the primary's request.
func (s *session) removePath(req *pb.RemovePathRequest) {
	var ok bool
	var p *path
	if s.runOnLoop(func() {
		r := s.paths.byID[req.PathId]
		ok = r != nil && r.p != nil && !r.primary && (r.status == PathActive || r.status == PathDead)
		if ok {
			r.setStatus(PathRemoved, "removed by the primary")
			p = r.p
		}
	}) != nil {
		return // the session is closing
	}
	resp := &pb.RemovePathResponse{PathId: echoID(req.PathId), Success: ok}
	if !ok {
		resp.ErrorMessage = "no such secondary path"
	} else {
		p.cancel()
		_ = p.conn.CloseWithError(kwikCodeBase+ApplicationErrorCode(CodePathRemoved), "removed by the primary")
		s.failDelegations(p, CodePathRemoved, "path removed")
	}
	s.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_RemovePathResponse{RemovePathResponse: resp}})
}

// pathDied (client) handles the death of a secondary path: it alone ends, the primary is told.
func (s *session) pathDied(p *path, err error) {
	rejoin := s.conf.PathRetry.MaxRetries > 0 && !closedByPeer(err) && !violation(err)
	var r *pathRecord
	changed := false
	_ = s.runOnLoop(func() { // once the session is closing, the loop marks the path dead
		r = p.rec
		changed = r.status == PathActive
		if changed {
			r.setStatus(PathDead, err.Error())
			if violation(err) {
				r.reason += "; not rejoined: the secondary broke the protocol"
			}
		}
	})
	s.log.Info("kwik: path dead", "path", p.id, "address", p.address, "reason", err.Error())
	p.cancel()
	code := kwikCodeBase + ApplicationErrorCode(CodePathDead)
	var ke *Error
	if errors.As(err, &ke) && !ke.Remote {
		code = kwikCodeBase + ApplicationErrorCode(ke.Code)
	}
	_ = p.conn.CloseWithError(code, err.Error())
	s.failDelegations(p, CodePathDead, err.Error())
	if changed {
		s.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_PathStatusNotification{PathStatusNotification: &pb.PathStatusNotification{
			PathId: p.id, Status: pb.PathStatus_DEAD, Reason: err.Error(),
		}}})
		if rejoin {
			s.wg.Add(1)
			go s.rejoin(r)
		}
	}
}

// violation says whether this client cut a path off because its secondary broke the protocol
// (KWIK_INVALID_FRAME, KWIK_OFFSET_MISMATCH...): such a path is not rejoined, lest a hostile or
// broken secondary be trusted with new delegations again, death after death.
func violation(err error) bool {
	var ke *Error
	if !errors.As(err, &ke) || ke.Remote {
		return false
	}
	switch ke.Code {
	case CodeInvalidFrame, CodePacketTooLarge, CodeOffsetMismatch, CodeFlowControl, CodeStreamCreateFailed:
		return true
	}
	return false
}

// closedByPeer says whether a path ended because its server closed it on purpose (an
// application close, or a KWIK error it reported): such a path is not rejoined, unlike one
// that went silent or whose connection failed.
func closedByPeer(err error) bool {
	var appErr *quic.ApplicationError
	var ke *Error
	return errors.As(err, &appErr) && appErr.Remote || errors.As(err, &ke) && ke.Remote
}

// rejoin (client) tries to bring a dead secondary path back, as Config.PathRetry says. It
// runs on its own goroutine, ends with the session, and gives up on a path that stops being
// dead (the primary removed it) or that the primary will not give a token for.
func (s *session) rejoin(rec *pathRecord) {
	defer s.wg.Done()
	pol := s.conf.PathRetry
	var last error
	tries := 0
	for try := 1; try <= pol.MaxRetries; try++ {
		t := time.NewTimer(pol.backoff(try, rand.Float64))
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return
		}
		dead := false
		if s.runOnLoop(func() { dead = rec.status == PathDead }) != nil || !dead {
			return
		}
		tries++
		ctx, cancel := context.WithTimeout(s.ctx, pol.TryTimeout)
		token, err := s.requestToken(ctx, rec.id)
		if err == nil {
			err = s.dialSecondary(ctx, rec, token, PathDead)
		}
		cancel()
		if err == nil {
			s.log.Info("kwik: path rejoined", "path", rec.id, "address", rec.address, "try", try)
			s.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_PathStatusNotification{PathStatusNotification: &pb.PathStatusNotification{
				PathId: rec.id, Status: pb.PathStatus_ACTIVE, Reason: fmt.Sprintf("rejoined at try %d", try),
			}}})
			return
		}
		last = err
		s.log.Debug("kwik: rejoining a path failed", "path", rec.id, "try", try, "err", err)
		var ke *Error
		if errors.As(err, &ke) && ke.Remote && ke.Code == CodePathNotFound {
			break // the primary refuses: removed, or not dead in its eyes
		}
	}
	if s.ctx.Err() != nil {
		return
	}
	_ = s.runOnLoop(func() {
		if rec.status == PathDead {
			rec.reason = fmt.Sprintf("%s; not rejoined after %d tries, the last: %v", rec.reason, tries, last)
		}
	})
	s.log.Info("kwik: path not rejoined", "path", rec.id, "address", rec.address, "err", last)
}

// handlePathTokenResponse (client) hands the primary's answer to the rejoin waiting for it.
func (s *session) handlePathTokenResponse(r *pb.PathTokenResponse) {
	if ch := takeWaiter(s, s.paths.tokens, r.PathId); ch != nil {
		ch <- r
	}
}

// requestToken (client) asks the primary for a fresh join token for a dead path.
func (s *session) requestToken(ctx context.Context, pathID string) ([]byte, error) {
	ch := make(chan *pb.PathTokenResponse, 1)
	if err := s.runOnLoop(func() { s.paths.tokens[pathID] = ch }); err != nil {
		return nil, err
	}
	defer takeWaiter(s, s.paths.tokens, pathID)
	s.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_PathTokenRequest{PathTokenRequest: &pb.PathTokenRequest{PathId: pathID}}})
	select {
	case r := <-ch:
		if r.ErrorCode != 0 || len(r.JoinToken) == 0 {
			code := ErrorCode(r.ErrorCode)
			if code == 0 {
				code = CodeInternal
			}
			return nil, &Error{Code: code, Message: "no token to rejoin: " + r.ErrorMessage, Remote: true}
		}
		return r.JoinToken, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("kwik: waiting for a token to rejoin %s: %w", pathID, ctx.Err())
	}
}
