package kwik

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/kwik-go/kwik/internal/wire"
	"github.com/kwik-go/kwik/internal/wire/pb"
)

// session is every role's Session. It owns its paths (one, the primary, in this version) and
// its streams; all its goroutines are counted in wg and end when ctx is canceled and the
// connections are closed.
type session struct {
	role      Role
	id        string
	conf      *Config
	peer      peerParams
	createdAt time.Time

	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	once   sync.Once

	primary *path
	streams *streamsMap
}

// peerParams are the limits the peer announced in the handshake.
type peerParams struct {
	maxMessageSize int
	maxFrameData   int
	streamWindow   uint64
	maxStreams     uint64
}

func (c *Config) params() *pb.TransportParameters {
	return &pb.TransportParameters{
		MaxMessageSize:      uint64(c.MaxMessageSize),
		MaxIncomingStreams:  uint64(c.MaxIncomingStreams),
		StreamReceiveWindow: uint64(c.StreamReceiveWindow),
	}
}

func parsePeerParams(tp *pb.TransportParameters) (peerParams, error) {
	pp := peerParams{
		maxMessageSize: defaultMaxMessageSize,
		streamWindow:   defaultStreamReceiveWindow,
		maxStreams:     defaultMaxIncomingStreams,
	}
	if tp != nil {
		if tp.MaxMessageSize != 0 {
			if tp.MaxMessageSize < minMessageSize || tp.MaxMessageSize > maxMessageSize {
				return pp, &Error{Code: CodeInvalidFrame, Message: "peer's max message size out of range"}
			}
			pp.maxMessageSize = int(tp.MaxMessageSize)
		}
		if tp.StreamReceiveWindow != 0 {
			pp.streamWindow = min(tp.StreamReceiveWindow, maxStreamReceiveWindow)
		}
		if tp.MaxIncomingStreams != 0 {
			pp.maxStreams = min(tp.MaxIncomingStreams, 1<<40)
		}
	}
	pp.maxFrameData = wire.MaxFrameData(pp.maxMessageSize)
	return pp, nil
}

func newSession(role Role, id string, conf *Config, peer peerParams) *session {
	s := &session{role: role, id: id, conf: conf, peer: peer, createdAt: time.Now()}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	return s
}

// start runs the session once its primary path is authenticated.
func (s *session) start(primary *path) {
	s.primary = primary
	s.streams = newStreamsMap(s, s.role == RoleClient, s.peer.maxStreams)
	primary.start()
}

func (s *session) closeErr() error { return context.Cause(s.ctx) }

// shutdown closes the session once: every pending call returns cause, and the peer sees
// code and msg on its connection.
func (s *session) shutdown(cause error, code ApplicationErrorCode, msg string) {
	s.once.Do(func() {
		s.cancel(cause)
		s.streams.closeAll(cause)
		_ = s.primary.conn.CloseWithError(code, msg)
	})
}

// closeLocal closes the session for a KWIK error this side detected.
func (s *session) closeLocal(err error) {
	var ke *Error
	if !errors.As(err, &ke) {
		ke = &Error{Code: CodeInternal, Message: err.Error()}
	}
	s.shutdown(ke, kwikCodeBase+ApplicationErrorCode(ke.Code), ke.Message)
}

// closeRemote closes the session because the peer closed it (or the connection died).
func (s *session) closeRemote(err error) {
	s.shutdown(closeError(err), 0, "")
}

func (s *session) CloseWithError(code ApplicationErrorCode, msg string) error {
	s.shutdown(&ApplicationError{ErrorCode: code, ErrorMessage: msg}, code, msg)
	s.wg.Wait()
	return nil
}

func (s *session) Close() error { return s.CloseWithError(0, "") }

func (s *session) OpenStream() (Stream, error) {
	st, err := s.streams.open(context.Background(), false)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (s *session) OpenStreamSync(ctx context.Context) (Stream, error) {
	st, err := s.streams.open(ctx, true)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (s *session) AcceptStream(ctx context.Context) (Stream, error) {
	st, err := s.streams.acceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (s *session) AddPath(address string) error {
	if s.role != RolePrimary {
		return ErrNotPrimary
	}
	return ErrNotImplemented
}

func (s *session) RemovePath(pathID string) error {
	if s.role != RolePrimary {
		return ErrNotPrimary
	}
	if pathID == s.primary.id {
		return errors.New("kwik: the primary path cannot be removed")
	}
	return &Error{Code: CodePathNotFound, Message: pathID}
}

func (s *session) GetActivePaths() []PathInfo {
	if s.ctx.Err() != nil {
		return nil
	}
	return []PathInfo{s.primary.info()}
}

func (s *session) GetDeadPaths() []PathInfo {
	if s.ctx.Err() == nil {
		return nil
	}
	return []PathInfo{s.primary.info()}
}

func (s *session) GetAllPaths() []PathInfo { return []PathInfo{s.primary.info()} }

func (s *session) SendRawData(data []byte, pathID string) error { return ErrNotImplemented }

func (s *session) ReceiveRawData(ctx context.Context) (RawData, error) {
	return RawData{}, ErrNotImplemented
}

func (s *session) ID() string               { return s.id }
func (s *session) Role() Role               { return s.role }
func (s *session) Context() context.Context { return s.ctx }
func (s *session) LocalAddr() net.Addr      { return s.primary.conn.LocalAddr() }
func (s *session) RemoteAddr() net.Addr     { return s.primary.conn.RemoteAddr() }

// randomID returns n random bytes in hex: 16 for session IDs (128 bits, unguessable), 8 for
// path IDs.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
