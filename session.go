package kwik

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwik-go/kwik/internal/wire"
	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// session is every role's Session. A client session holds one path per server (the primary
// and the secondaries it joined); a server session holds its own path. The session owns its
// streams and its paths; all its goroutines are counted in wg and end when ctx is canceled
// and the connections are closed.
type session struct {
	role      Role
	id        string
	conf      *Config
	tlsConf   *tls.Config // the client's, to join secondaries
	createdAt time.Time

	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	once   sync.Once
	// closing is the application's close while closeGracefully runs: whatever ends the
	// session meanwhile (the peer closing in answer), the session ends with it.
	closing  atomic.Pointer[ApplicationError]
	graceful chan struct{} // closed when the close that set closing has run closeGracefully

	log     *slog.Logger
	primary *path // client: the path to the primary; servers: their own path
	streams *streamsMap

	// paths is the path registry, owned by the session's loop goroutine (session_loop.go):
	// only closures run by runOnLoop touch it, and anyone once the loop has ended.
	loop  controlLoop
	paths struct {
		records []*pathRecord // every path since the session began, in creation order
		byID    map[string]*pathRecord
		adds    map[string]chan *pb.AddPathResponse    // primary: AddPath calls waiting
		removes map[string]chan *pb.RemovePathResponse // primary: RemovePath calls waiting
		tokens  map[string]chan *pb.PathTokenResponse  // client: rejoins waiting for a token
	}

	raw rawState

	credit sessionCredit // receive credit of all the streams together

	fanoutMemo fanoutMemory // primary: what the session's last Fanouts measured of its paths

	delegs       primaryDelegations   // primary: delegations awaiting the client's verdict
	clientDelegs clientDelegations    // client: reservations by delegation ID
	held         heldDelegations      // client: ranges for paths still joining
	secondary    secondaryDelegations // secondary: delegations as streams

	delegKey  []byte     // servers: the key of delegation MACs, derived from the join key (trust.go)
	joinState *joinEntry // secondary: the listener's state of this session's path (trust.go)
	orderOnce sync.Once
	order     *orderState // servers: sealed raw data (orders.go)
}

// peerParams are the limits the peer of a path announced in its handshake.
type peerParams struct {
	maxMessageSize int
	maxFrameData   int
	streamWindow   uint64 // initial credit of every stream
	windowMax      uint64 // the credit the peer keeps ahead of its reads, at most
	maxStreams     uint64 // bidirectional logical streams this side may open at first
	maxUniStreams  uint64 // unidirectional ones
	zstd           bool   // accepts compressed DataPackets
	// delegationStreams: a client that takes DelegateRange frames on streams the primary
	// opens, one each (controlWriter.queueAlone).
	delegationStreams bool
}

func (c *Config) params() *pb.TransportParameters {
	return &pb.TransportParameters{
		MaxMessageSize:         uint64(c.MaxMessageSize),
		MaxIncomingStreams:     uint64(c.MaxIncomingStreams),
		MaxIncomingUniStreams:  uint64(c.MaxIncomingUniStreams),
		StreamReceiveWindow:    c.initialStreamWindow(),
		MaxStreamReceiveWindow: uint64(c.StreamReceiveWindow),
		Compression:            compressionFlags(c.Compression),
	}
}

func parsePeerParams(tp *pb.TransportParameters) (peerParams, error) {
	pp := peerParams{
		maxMessageSize: defaultMaxMessageSize,
		streamWindow:   defaultStreamReceiveWindow,
		maxStreams:     defaultMaxIncomingStreams,
		maxUniStreams:  defaultMaxIncomingStreams,
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
		if tp.MaxIncomingUniStreams != 0 {
			pp.maxUniStreams = min(tp.MaxIncomingUniStreams, 1<<40)
		}
		pp.zstd = tp.Compression&compressZstd != 0
		pp.delegationStreams = tp.DelegationStreams
		pp.windowMax = min(tp.MaxStreamReceiveWindow, maxStreamReceiveWindow)
	}
	pp.windowMax = max(pp.windowMax, pp.streamWindow)
	pp.maxFrameData = wire.MaxFrameData(pp.maxMessageSize)
	return pp, nil
}

// newSession returns a session whose context derives from parent: it carries parent's values
// (the Dial context's on a client, the QUIC connection's on a server), not its cancellation.
func newSession(parent context.Context, role Role, id string, conf *Config) *session {
	s := &session{role: role, id: id, conf: conf, createdAt: time.Now()}
	s.log = conf.Logger.With("session", id, "role", role.String())
	s.ctx, s.cancel = context.WithCancelCause(parent)
	s.graceful = make(chan struct{})
	s.loop.init()
	s.paths.byID = make(map[string]*pathRecord)
	s.paths.adds = make(map[string]chan *pb.AddPathResponse)
	s.paths.removes = make(map[string]chan *pb.RemovePathResponse)
	s.paths.tokens = make(map[string]chan *pb.PathTokenResponse)
	s.raw.init()
	s.credit.max = uint64(conf.MaxSessionReceiveWindow)
	s.delegs.byID = make(map[uint64]*Delegation)
	s.delegs.outstanding = make(map[string]outstanding)
	s.clientDelegs.byID = make(map[uint64]*delegationRecord)
	s.clientDelegs.stopped = make(map[uint64]*delegationRecord)
	s.secondary.byStream = make(map[uint64]map[*delegatedStream]struct{})
	s.secondary.signal = make(chan struct{}, 1)
	s.delegKey = delegationKey(conf.JoinKey)
	return s
}

// start runs the session once its first path is authenticated.
func (s *session) start(first *path) {
	s.log.Info("kwik: session started", "path", first.id, "remote", first.conn.RemoteAddr().String())
	s.primary = first
	s.streams = newStreamsMap(s, s.role == RoleClient, first.peer)
	rec := &pathRecord{id: first.id, address: first.address, primary: s.role != RoleSecondary, status: PathActive, createdAt: first.createdAt, p: first}
	s.paths.records = append(s.paths.records, rec)
	s.paths.byID[first.id] = rec
	first.rec = rec
	s.wg.Add(1)
	go s.runLoop()
	first.start()
}

func (s *session) closeErr() error { return context.Cause(s.ctx) }

// shutdown closes the session once: every pending call returns cause, and the peers see code
// and msg on their connections. It ends the session's loop, which marks the live paths dead,
// and so must never run on the loop.
func (s *session) shutdown(cause error, code ApplicationErrorCode, msg string) {
	if c := s.closing.Load(); c != nil {
		cause, code, msg = c, c.ErrorCode, c.ErrorMessage
	}
	s.once.Do(func() {
		s.log.Info("kwik: session closed", "cause", cause.Error())
		s.cancel(cause)
		s.streams.closeAll(cause)
		for _, p := range s.endLoop(cause) {
			p.cancel()
			_ = p.conn.CloseWithError(code, msg)
		}
	})
}

// closeGracefully lets the peers of every live path receive what this side queued for them
// before the session closes: a quic-go connection closed at once drops stream data not yet
// sent, such as a client's last DelegationStatus, which the primary's Wait needs. It sends
// SessionClose after the queued control frames and waits, per path, until the peer closes the
// connection in answer, for at most a few round trips (closeWaitMax in all). Data still
// unacknowledged on the data streams is not waited for, as in quic-go.
func (s *session) closeGracefully(code ApplicationErrorCode, msg string) {
	if s.ctx.Err() != nil {
		return
	}
	var wg sync.WaitGroup
	for _, p := range s.liveConns() {
		wg.Go(func() {
			wait := min(max(4*p.conn.ConnectionStats().SmoothedRTT, closeWaitMin), closeWaitMax)
			timer := time.NewTimer(wait)
			defer timer.Stop()
			written := p.ctrl.flush(&pb.ControlFrame{Payload: &pb.ControlFrame_SessionClose{SessionClose: &pb.SessionClose{
				ErrorCode: uint64(code), Reason: msg,
			}}})
			select {
			case <-written:
			case <-timer.C:
				return
			}
			select {
			case <-p.conn.Context().Done():
			case <-timer.C:
			}
		})
	}
	wg.Wait()
}

// Bounds of closeGracefully's wait for a peer's answer.
const (
	closeWaitMin = 100 * time.Millisecond
	closeWaitMax = time.Second
)

// closeLocal closes the session for a KWIK error this side detected.
func (s *session) closeLocal(err error) {
	var ke *Error
	if !errors.As(err, &ke) {
		ke = &Error{Code: CodeInternal, Message: err.Error()}
	}
	s.shutdown(ke, kwikCodeBase+ApplicationErrorCode(ke.Code), ke.Message)
}

// closeRemote closes the session because the peer closed it (or the connection died). When
// the essential path timed out (QUIC's idle timeout), the session ends with that error, and the
// client tells its secondaries KWIK_PATH_DEAD with the reason.
func (s *session) closeRemote(err error) {
	err = closeError(err)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		s.shutdown(err, kwikCodeBase+ApplicationErrorCode(CodePathDead), "the primary path: "+err.Error())
		return
	}
	s.shutdown(err, 0, "")
}

func (s *session) CloseWithError(code ApplicationErrorCode, msg string) error {
	cause := &ApplicationError{ErrorCode: code, ErrorMessage: msg}
	if s.ctx.Err() == nil && s.closing.CompareAndSwap(nil, cause) {
		s.closeGracefully(code, msg)
		close(s.graceful)
	} else if s.closing.Load() != nil {
		<-s.graceful // a concurrent Close is at it: do not cut its SessionClose short
	}
	s.shutdown(cause, code, msg)
	s.wg.Wait()
	return nil
}

func (s *session) Close() error { return s.CloseWithError(0, "") }

// errSecondaryOpens is what a secondary's OpenStream returns: only the primary and the client
// open streams; a secondary's bytes go into ranges the primary delegates to it.
var errSecondaryOpens = fmt.Errorf("kwik: a secondary server opens no streams: %w", ErrNotPrimary)

func (s *session) OpenStream() (Stream, error) {
	if s.role == RoleSecondary {
		return nil, errSecondaryOpens
	}
	st, err := s.streams.open(context.Background(), false, dirBidi)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (s *session) OpenStreamSync(ctx context.Context) (Stream, error) {
	if s.role == RoleSecondary {
		return nil, errSecondaryOpens
	}
	st, err := s.streams.open(ctx, true, dirBidi)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// AcceptStream returns the next stream the peer opened; on a secondary, the next delegation.
func (s *session) AcceptStream(ctx context.Context) (Stream, error) {
	if s.role == RoleSecondary {
		ds, err := s.acceptDelegation(ctx)
		if err != nil {
			return nil, err
		}
		return ds, nil
	}
	st, err := s.streams.acceptStream(ctx, dirBidi)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// errSecondaryUni is what a secondary's uni-stream calls return: logical streams live between
// the client and the primary.
var errSecondaryUni = fmt.Errorf("kwik: a secondary server has no unidirectional streams: %w", ErrNotPrimary)

func (s *session) OpenUniStream() (SendStream, error) {
	if s.role == RoleSecondary {
		return nil, errSecondaryUni
	}
	st, err := s.streams.open(context.Background(), false, dirUni)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (s *session) OpenUniStreamSync(ctx context.Context) (SendStream, error) {
	if s.role == RoleSecondary {
		return nil, errSecondaryUni
	}
	st, err := s.streams.open(ctx, true, dirUni)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (s *session) AcceptUniStream(ctx context.Context) (ReceiveStream, error) {
	if s.role == RoleSecondary {
		return nil, errSecondaryUni
	}
	st, err := s.streams.acceptStream(ctx, dirUni)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// SendDatagram sends p as a QUIC datagram on the primary path (on a secondary, on its own path
// to the client, which receives datagrams from the primary path only).
func (s *session) SendDatagram(p []byte) error {
	if err := s.ctx.Err(); err != nil {
		return s.closeErr()
	}
	err := s.primary.conn.SendDatagram(p)
	if err != nil && s.primary.conn.Context().Err() != nil {
		return s.sessionErr(err)
	}
	return err
}

// ReceiveDatagram returns the next datagram of the primary path.
func (s *session) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	b, err := s.primary.conn.ReceiveDatagram(ctx)
	if err != nil && ctx.Err() == nil {
		return nil, s.sessionErr(err)
	}
	return b, err
}

// sessionErr is the error to report for a failure of the primary path's connection: the
// session's close error once it has one (the connection's end closes the session).
func (s *session) sessionErr(err error) error {
	if s.ctx.Err() != nil {
		return s.closeErr()
	}
	if cerr := connClosed(s.primary.conn, err); cerr != nil {
		return cerr
	}
	return err
}

func (s *session) ConnectionState() quic.ConnectionState { return s.primary.conn.ConnectionState() }

// handshakeDone is closed: a session exists only once its handshake is complete.
var handshakeDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (s *session) HandshakeComplete() <-chan struct{} { return handshakeDone }

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

// take removes and returns m[k] under mu: how a reply finds the call waiting for it.
func take[K comparable, V any](mu *sync.Mutex, m map[K]V, k K) V {
	mu.Lock()
	defer mu.Unlock()
	v := m[k]
	delete(m, k)
	return v
}
