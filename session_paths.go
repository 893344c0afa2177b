package kwik

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/kwik-go/kwik/internal/jointoken"
	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// pathRecord is one path in a session's history. Guarded by session.paths.mu.
type pathRecord struct {
	id, address string
	primary     bool
	status      PathStatus
	reason      string // why it is dead or removed
	createdAt   time.Time
	changedAt   time.Time  // last status change: LastActive for paths without a connection here
	p           *path      // the connection, on the side that has one
	tokens      tokenLimit // primary: the rejoin tokens given for the path
}

func (r *pathRecord) setStatus(st PathStatus, reason string) {
	r.status, r.reason, r.changedAt = st, reason, time.Now()
}

func (r *pathRecord) info() PathInfo {
	last := r.changedAt
	if r.p != nil {
		last = time.Unix(0, r.p.lastActive.Load())
	}
	if last.IsZero() {
		last = r.createdAt
	}
	return PathInfo{PathID: r.id, Address: r.address, IsPrimary: r.primary, Status: r.status, CreatedAt: r.createdAt, LastActive: last, Reason: r.reason}
}

func (s *session) pathInfos(keep func(PathStatus) bool) []PathInfo {
	s.paths.mu.Lock()
	defer s.paths.mu.Unlock()
	var out []PathInfo
	for _, r := range s.paths.records {
		if keep(r.status) {
			out = append(out, r.info())
		}
	}
	return out
}

func (s *session) GetActivePaths() []PathInfo {
	return s.pathInfos(func(st PathStatus) bool { return st == PathActive })
}

func (s *session) GetDeadPaths() []PathInfo {
	return s.pathInfos(func(st PathStatus) bool { return st == PathDead })
}

func (s *session) GetAllPaths() []PathInfo {
	return s.pathInfos(func(PathStatus) bool { return true })
}

// pathError says why an operation cannot use pathID: nil if it is active.
func (s *session) pathError(pathID string) error {
	s.paths.mu.Lock()
	defer s.paths.mu.Unlock()
	r := s.paths.byID[pathID]
	switch {
	case r == nil:
		return &Error{Code: CodePathNotFound, Message: echoID(pathID)}
	case r.status == PathDead:
		return &Error{Code: CodePathDead, Message: pathID + ": " + r.reason}
	case r.status != PathActive:
		return &Error{Code: CodePathNotFound, Message: pathID + " is " + r.status.String()}
	}
	return nil
}

// AddPath asks the client to join the server at address. It returns once the client has
// answered: nil means the path is active.
func (s *session) AddPath(address string) error {
	if s.role != RolePrimary {
		return ErrNotPrimary
	}
	if len(s.conf.JoinKey) == 0 {
		return &detailError{msg: "kwik: AddPath needs Config.JoinKey, shared with the secondaries", is: ErrNoJoinKey}
	}
	if address == "" {
		return invalidArgument("kwik: AddPath: empty address")
	}
	id := randomID(8)
	now := time.Now()
	token, err := jointoken.Issue(s.conf.JoinKey, s.id, id, address, now, now.Add(s.conf.JoinTokenTTL))
	if err != nil {
		return err
	}
	ch := make(chan *pb.AddPathResponse, 1)
	s.paths.mu.Lock()
	if err := s.ctx.Err(); err != nil {
		s.paths.mu.Unlock()
		return s.closeErr()
	}
	live := 0
	for _, r := range s.paths.records {
		if r.status == PathActive || r.status == PathConnecting {
			live++
			if r.address == address && !r.primary {
				s.paths.mu.Unlock()
				return fmt.Errorf("kwik: AddPath: %s is already path %s (%v)", address, r.id, r.status)
			}
		}
	}
	if live >= s.conf.MaxPaths {
		s.paths.mu.Unlock()
		return fmt.Errorf("kwik: AddPath: the session already has %d paths (Config.MaxPaths)", live)
	}
	rec := &pathRecord{id: id, address: address, status: PathConnecting, createdAt: time.Now()}
	s.paths.records = append(s.paths.records, rec)
	s.paths.byID[id] = rec
	s.paths.adds[id] = ch
	s.paths.mu.Unlock()

	s.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_AddPathRequest{AddPathRequest: &pb.AddPathRequest{
		TargetAddress: address, SessionId: s.id, PathId: id, JoinToken: token,
	}}})
	// The client dials within its own HandshakeTimeout; allow for the token's life as well.
	timer := time.NewTimer(s.conf.JoinTokenTTL + s.conf.HandshakeTimeout)
	defer timer.Stop()
	var resp *pb.AddPathResponse
	select {
	case resp = <-ch:
	case <-timer.C:
		resp = &pb.AddPathResponse{ErrorCode: pb.ErrorCode(CodePathDead), ErrorMessage: "the client did not answer"}
	case <-s.ctx.Done():
		return s.closeErr()
	}
	s.paths.mu.Lock()
	delete(s.paths.adds, id)
	if resp.Success {
		if rec.status == PathConnecting {
			rec.setStatus(PathActive, "")
		}
		s.paths.mu.Unlock()
		s.log.Info("kwik: path added", "path", id, "address", address)
		return nil
	}
	s.log.Info("kwik: path refused", "path", id, "address", address, "reason", resp.ErrorMessage)
	rec.setStatus(PathDead, resp.ErrorMessage)
	s.paths.mu.Unlock()
	code := ErrorCode(resp.ErrorCode)
	if code == 0 {
		code = CodeInternal
	}
	return &Error{Code: code, Message: fmt.Sprintf("joining %s: %s", address, resp.ErrorMessage), Remote: true}
}

// RemovePath closes a secondary path. It returns once the client has closed it.
func (s *session) RemovePath(pathID string) error {
	if s.role != RolePrimary {
		return ErrNotPrimary
	}
	if pathID == s.primary.id {
		return &detailError{msg: "kwik: the primary path cannot be removed", is: ErrPrimaryPath}
	}
	// A dead path can be removed too: the client then stops rejoining it.
	if err := s.pathError(pathID); err != nil && !errors.Is(err, ErrPathDead) {
		return err
	}
	ch := make(chan *pb.RemovePathResponse, 1)
	s.paths.mu.Lock()
	s.paths.removes[pathID] = ch
	s.paths.mu.Unlock()
	defer func() {
		s.paths.mu.Lock()
		delete(s.paths.removes, pathID)
		s.paths.mu.Unlock()
	}()
	s.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_RemovePathRequest{RemovePathRequest: &pb.RemovePathRequest{PathId: pathID}}})
	timer := time.NewTimer(s.conf.answerTimeout())
	defer timer.Stop()
	select {
	case resp := <-ch:
		s.paths.mu.Lock()
		r := s.paths.byID[pathID]
		if resp.Success {
			r.setStatus(PathRemoved, "removed by the primary")
		}
		s.paths.mu.Unlock()
		if !resp.Success {
			return &Error{Code: CodePathNotFound, Message: resp.ErrorMessage, Remote: true}
		}
		return nil
	case <-timer.C:
		return &Error{Code: CodePathDead, Message: "the client did not answer the removal of " + pathID}
	case <-s.ctx.Done():
		return s.closeErr()
	}
}

// handleAddPathResponse (primary) delivers the client's answer to the waiting AddPath.
func (s *session) handleAddPathResponse(r *pb.AddPathResponse) error {
	ch := take(&s.paths.mu, s.paths.adds, r.PathId)
	if ch == nil {
		return nil // AddPath gave up waiting
	}
	ch <- r
	return nil
}

func (s *session) handleRemovePathResponse(r *pb.RemovePathResponse) error {
	if ch := take(&s.paths.mu, s.paths.removes, r.PathId); ch != nil {
		ch <- r
	}
	return nil
}

// handlePathStatus (primary) records what the client says of a path.
func (s *session) handlePathStatus(n *pb.PathStatusNotification) error {
	s.paths.mu.Lock()
	defer s.paths.mu.Unlock()
	r := s.paths.byID[n.PathId]
	if r == nil || r == s.primary.rec {
		return nil
	}
	switch n.Status {
	case pb.PathStatus_DEAD:
		if r.status == PathActive || r.status == PathConnecting {
			r.tokens.died()
			r.setStatus(PathDead, n.Reason)
			s.log.Info("kwik: the client reports a dead path", "path", n.PathId, "reason", n.Reason)
		}
	case pb.PathStatus_ACTIVE:
		if r.status == PathDead {
			r.setStatus(PathActive, "")
		}
	}
	return nil
}

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
	s.paths.mu.Lock()
	if s.paths.byID[req.PathId] != nil {
		s.paths.mu.Unlock()
		fail(CodeInvalidFrame, "path ID already in use")
		return
	}
	if len(s.paths.records) >= maxPathHistory {
		s.paths.mu.Unlock()
		fail(CodeInternal, "the session has tried too many paths")
		return
	}
	live := 0
	for _, r := range s.paths.records {
		if r.status == PathActive || r.status == PathConnecting {
			live++
		}
	}
	if live >= s.conf.MaxPaths {
		s.paths.mu.Unlock()
		fail(CodeInternal, "the client allows no more paths (Config.MaxPaths)")
		return
	}
	rec := &pathRecord{id: req.PathId, address: req.TargetAddress, status: PathConnecting, createdAt: time.Now()}
	s.paths.records = append(s.paths.records, rec)
	s.paths.byID[rec.id] = rec
	s.paths.mu.Unlock()

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, s.conf.HandshakeTimeout)
		var err error
		if s.conf.AllowPath != nil {
			// Here, not on the control reader: a policy may resolve the address.
			if perr := s.conf.AllowPath(req.TargetAddress); perr != nil {
				err = &Error{Code: CodeAuthFailed, Message: "the client's policy refuses " + req.TargetAddress + ": " + perr.Error()}
			}
		}
		if err == nil {
			err = s.dialSecondary(ctx, rec, req.JoinToken, PathConnecting)
		}
		cancel()
		if err == nil {
			s.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_AddPathResponse{AddPathResponse: &pb.AddPathResponse{
				PathId: rec.id, Success: true,
			}}})
			return
		}
		s.paths.mu.Lock()
		if rec.status == PathConnecting {
			rec.setStatus(PathDead, err.Error())
		}
		s.paths.mu.Unlock()
		s.log.Info("kwik: join failed", "path", rec.id, "address", rec.address, "err", err)
		fail(joinFailure(err))
	}()
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
	conn, err := quic.DialAddr(ctx, rec.address, tc, s.conf.QUIC)
	if err != nil {
		return err
	}
	p, err := clientAuthenticate(ctx, conn, s.conf, &pb.AuthenticationRequest{
		SessionId: s.id, Credentials: token, PathId: rec.id, TargetAddress: rec.address,
	})
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
	s.paths.mu.Lock()
	if s.ctx.Err() != nil || rec.status != from {
		s.paths.mu.Unlock()
		_ = conn.CloseWithError(kwikCodeBase+ApplicationErrorCode(CodePathRemoved), "session closed")
		return errors.New("kwik: the session closed, or the path was removed, while joining")
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
	s.paths.mu.Unlock()
	path.start()
	return nil
}

// removePath (client) closes a secondary path at the primary's request.
func (s *session) removePath(req *pb.RemovePathRequest) {
	s.paths.mu.Lock()
	r := s.paths.byID[req.PathId]
	ok := r != nil && r.p != nil && !r.primary && (r.status == PathActive || r.status == PathDead)
	var p *path
	if ok {
		r.setStatus(PathRemoved, "removed by the primary")
		p = r.p
	}
	s.paths.mu.Unlock()
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
	s.paths.mu.Lock()
	r := p.rec
	changed := r.status == PathActive
	if changed {
		r.setStatus(PathDead, err.Error())
		if violation(err) {
			r.reason += "; not rejoined: the secondary broke the protocol"
		}
	}
	s.paths.mu.Unlock()
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
		s.paths.mu.Lock()
		dead := rec.status == PathDead
		s.paths.mu.Unlock()
		if !dead {
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
	s.paths.mu.Lock()
	if rec.status == PathDead {
		rec.reason = fmt.Sprintf("%s; not rejoined after %d tries, the last: %v", rec.reason, tries, last)
	}
	s.paths.mu.Unlock()
	s.log.Info("kwik: path not rejoined", "path", rec.id, "address", rec.address, "err", last)
}

// requestToken (client) asks the primary for a fresh join token for a dead path.
func (s *session) requestToken(ctx context.Context, pathID string) ([]byte, error) {
	ch := make(chan *pb.PathTokenResponse, 1)
	s.paths.mu.Lock()
	s.paths.tokens[pathID] = ch
	s.paths.mu.Unlock()
	defer take(&s.paths.mu, s.paths.tokens, pathID)
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

// handlePathTokenRequest (primary) gives the client a fresh token to rejoin a path it knows
// as dead, and refuses any other (removed, unknown, alive, the primary's own).
func (s *session) handlePathTokenRequest(req *pb.PathTokenRequest) {
	resp := &pb.PathTokenResponse{PathId: echoID(req.PathId)}
	now := time.Now()
	s.paths.mu.Lock()
	r := s.paths.byID[req.PathId]
	ok := r != nil && !r.primary && r.status == PathDead
	var limited error
	var address string
	if ok {
		// A client may declare a live path dead to get tokens: a bounded number per death,
		// and per path, spaced by a growing wait (trust.go).
		limited = r.tokens.allow(now)
		address = r.address
	}
	s.paths.mu.Unlock()
	var err error
	if ok && limited == nil && len(s.conf.JoinKey) > 0 {
		resp.JoinToken, err = jointoken.Issue(s.conf.JoinKey, s.id, req.PathId, address, now, now.Add(s.conf.JoinTokenTTL))
	}
	switch {
	case !ok:
		resp.ErrorCode, resp.ErrorMessage = pb.ErrorCode(CodePathNotFound), "no dead path "+echoID(req.PathId)+" to rejoin"
	case limited != nil:
		resp.ErrorCode, resp.ErrorMessage = pb.ErrorCode(CodeAuthFailed), "token refused: "+limited.Error()
	case err != nil || len(resp.JoinToken) == 0:
		resp.ErrorCode, resp.ErrorMessage = pb.ErrorCode(CodeInternal), "cannot issue a token"
	}
	s.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_PathTokenResponse{PathTokenResponse: resp}})
}

// echoID returns a path ID a peer sent, fit to go back in an answer or an error: a malformed
// one, which may be as long as a message, becomes a placeholder. Answers must stay small: a
// peer that reads none of them piles them up in this side's control queue, which is bounded
// in frames.
func echoID(id string) string {
	if validID(id, 8) {
		return id
	}
	return "(malformed path ID)"
}

// livePath returns the connection of an active path (client side).
func (s *session) livePath(pathID string) (*path, error) {
	if err := s.pathError(pathID); err != nil {
		return nil, err
	}
	s.paths.mu.Lock()
	defer s.paths.mu.Unlock()
	r := s.paths.byID[pathID]
	if r == nil || r.p == nil {
		return nil, &Error{Code: CodePathNotFound, Message: echoID(pathID)}
	}
	return r.p, nil
}
