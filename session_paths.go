package kwik

import (
	"errors"
	"fmt"
	"time"

	"github.com/kwik-go/kwik/internal/jointoken"
	"github.com/kwik-go/kwik/internal/wire/pb"
)

// pathRecord is one path in a session's history. Owned by the session's loop (session_loop.go);
// id, address, primary and createdAt never change once it is made.
type pathRecord struct {
	id, address string
	primary     bool
	status      PathStatus
	reason      string // why it is dead or removed
	createdAt   time.Time
	changedAt   time.Time  // last status change: LastActive for paths without a connection here
	p           *path      // the connection, on the side that has one
	tokens      tokenLimit // primary: the rejoin tokens given for the path
	// join, on the primary, for a path it asked the client to join: when the join ended.
	// Fanout learns from it when a path it gave pieces while connecting is up.
	join *joinEnd
}

// joinEnd is the end of a join, whichever way (the path's status then says which): done is
// closed once it has ended, at, written before, never changes after.
type joinEnd struct {
	done chan struct{}
	at   time.Time
}

func (r *pathRecord) setStatus(st PathStatus, reason string) {
	now := time.Now()
	if r.join != nil && st != PathConnecting {
		select {
		case <-r.join.done:
		default:
			r.join.at = now
			close(r.join.done)
		}
	}
	r.status, r.reason, r.changedAt = st, reason, now
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
	var out []PathInfo
	s.inspect(func() {
		for _, r := range s.paths.records {
			if keep(r.status) {
				out = append(out, r.info())
			}
		}
	})
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
	var err error
	s.inspect(func() { err = s.pathErrorOnLoop(pathID) })
	return err
}

// delegationPathError says why a range cannot be delegated to pathID: nil if it is active, or
// (primary) still connecting after JoinPath or AddPath (joining), since the client holds the
// range until the join ends.
func (s *session) delegationPathError(pathID string) (joining bool, err error) {
	s.inspect(func() {
		if r := s.paths.byID[pathID]; r != nil && r.join != nil && r.status == PathConnecting {
			joining = true
			return
		}
		err = s.pathErrorOnLoop(pathID)
	})
	return joining, err
}

// joinOf returns the end of the join of path pathID (primary): nil if the primary is not
// joining it.
func (s *session) joinOf(pathID string) *joinEnd {
	var j *joinEnd
	s.inspect(func() {
		if r := s.paths.byID[pathID]; r != nil && r.status == PathConnecting {
			j = r.join
		}
	})
	return j
}

// pathErrorOnLoop is pathError, run on the loop.
func (s *session) pathErrorOnLoop(pathID string) error {
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
	id, ch, rec, err := s.startJoin(address)
	if err != nil {
		return err
	}
	return s.awaitJoin(address, id, ch, rec)
}

// JoinPath asks the client to join the server at address, as AddPath does, without waiting
// for the answer: it returns the new path's ID (PathConnecting until the client answers) and
// a channel that receives AddPath's result once (nil: the path is active). A request refused
// here returns no ID and its error on the channel. Delegations to the path may start at once
// (Stream.Delegate, Fanout): the client holds them until the path is active and fails them
// if the join fails, so that a secondary's first bytes come a round trip sooner than after
// AddPath.
func (s *session) JoinPath(address string) (pathID string, result <-chan error) {
	out := make(chan error, 1)
	id, ch, rec, err := s.startJoin(address)
	if err != nil {
		out <- err
		return "", out
	}
	go func() { out <- s.awaitJoin(address, id, ch, rec) }()
	return id, out
}

// startJoin records a new path to address, PathConnecting, and asks the client to join it.
func (s *session) startJoin(address string) (string, chan *pb.AddPathResponse, *pathRecord, error) {
	if s.role != RolePrimary {
		return "", nil, nil, ErrNotPrimary
	}
	if len(s.conf.JoinKey) == 0 {
		return "", nil, nil, &detailError{msg: "kwik: AddPath needs Config.JoinKey, shared with the secondaries", is: ErrNoJoinKey}
	}
	if address == "" {
		return "", nil, nil, invalidArgument("kwik: AddPath: empty address")
	}
	id := randomID(8)
	now := time.Now()
	token, err := jointoken.Issue(s.conf.JoinKey, s.id, id, address, now, now.Add(s.conf.JoinTokenTTL))
	if err != nil {
		return "", nil, nil, err
	}
	ch := make(chan *pb.AddPathResponse, 1)
	var rec *pathRecord
	var refused error
	if err := s.runOnLoop(func() {
		if s.ctx.Err() != nil {
			refused = s.closeErr()
			return
		}
		live := 0
		for _, r := range s.paths.records {
			if r.status == PathActive || r.status == PathConnecting {
				live++
				if r.address == address && !r.primary {
					refused = fmt.Errorf("kwik: AddPath: %s is already path %s (%v)", address, r.id, r.status)
					return
				}
			}
		}
		if live >= s.conf.MaxPaths {
			refused = fmt.Errorf("kwik: AddPath: the session already has %d paths (Config.MaxPaths)", live)
			return
		}
		rec = &pathRecord{id: id, address: address, status: PathConnecting, createdAt: time.Now(), join: &joinEnd{done: make(chan struct{})}}
		s.paths.records = append(s.paths.records, rec)
		s.paths.byID[id] = rec
		s.paths.adds[id] = ch
	}); err != nil {
		return "", nil, nil, err
	}
	if refused != nil {
		return "", nil, nil, refused
	}
	s.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_AddPathRequest{AddPathRequest: &pb.AddPathRequest{
		TargetAddress: address, SessionId: s.id, PathId: id, JoinToken: token,
	}}})
	return id, ch, rec, nil
}

// awaitJoin waits for the client's answer to the join of path id and returns AddPath's result.
func (s *session) awaitJoin(address, id string, ch chan *pb.AddPathResponse, rec *pathRecord) error {
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
	_ = s.runOnLoop(func() { // once the session is closing, the loop has marked rec dead
		delete(s.paths.adds, id)
		if !resp.Success {
			rec.setStatus(PathDead, resp.ErrorMessage)
		} else if rec.status == PathConnecting {
			rec.setStatus(PathActive, "")
		}
	})
	if resp.Success {
		s.log.Info("kwik: path added", "path", id, "address", address)
		return nil
	}
	s.log.Info("kwik: path refused", "path", id, "address", address, "reason", resp.ErrorMessage)
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
	if err := s.runOnLoop(func() { s.paths.removes[pathID] = ch }); err != nil {
		return err
	}
	defer takeWaiter(s, s.paths.removes, pathID)
	s.primary.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_RemovePathRequest{RemovePathRequest: &pb.RemovePathRequest{PathId: pathID}}})
	timer := time.NewTimer(s.conf.answerTimeout())
	defer timer.Stop()
	select {
	case resp := <-ch:
		if !resp.Success {
			return &Error{Code: CodePathNotFound, Message: resp.ErrorMessage, Remote: true}
		}
		_ = s.runOnLoop(func() { s.paths.byID[pathID].setStatus(PathRemoved, "removed by the primary") })
		return nil
	case <-timer.C:
		return &Error{Code: CodePathDead, Message: "the client did not answer the removal of " + pathID}
	case <-s.ctx.Done():
		return s.closeErr()
	}
}

// handleAddPathResponse (primary) delivers the client's answer to the waiting AddPath.
func (s *session) handleAddPathResponse(r *pb.AddPathResponse) error {
	ch := takeWaiter(s, s.paths.adds, r.PathId)
	if ch == nil {
		return nil // AddPath gave up waiting
	}
	ch <- r
	return nil
}

func (s *session) handleRemovePathResponse(r *pb.RemovePathResponse) error {
	if ch := takeWaiter(s, s.paths.removes, r.PathId); ch != nil {
		ch <- r
	}
	return nil
}

// handlePathStatus (primary) records what the client says of a path.
func (s *session) handlePathStatus(n *pb.PathStatusNotification) error {
	_ = s.runOnLoop(func() {
		r := s.paths.byID[n.PathId]
		if r == nil || r == s.primary.rec {
			return
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
	})
	return nil
}

// handlePathTokenRequest (primary) gives the client a fresh token to rejoin a path it knows
// as dead, and refuses any other (removed, unknown, alive, the primary's own).
func (s *session) handlePathTokenRequest(req *pb.PathTokenRequest) {
	resp := &pb.PathTokenResponse{PathId: echoID(req.PathId)}
	now := time.Now()
	var ok bool
	var limited error
	var address string
	if s.runOnLoop(func() {
		r := s.paths.byID[req.PathId]
		ok = r != nil && !r.primary && r.status == PathDead
		if ok {
			// A client may declare a live path dead to get tokens: a bounded number per
			// death, and per path, spaced by a growing wait (trust.go).
			limited = r.tokens.allow(now)
			address = r.address
		}
	}) != nil {
		return // the session is closing
	}
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
	var p *path
	var err error
	s.inspect(func() {
		if err = s.pathErrorOnLoop(pathID); err != nil {
			return
		}
		if p = s.paths.byID[pathID].p; p == nil {
			err = &Error{Code: CodePathNotFound, Message: echoID(pathID)}
		}
	})
	return p, err
}
