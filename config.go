package kwik

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kwik-go/kwik/internal/wire"
	"github.com/quic-go/quic-go"
)

// ALPN is the TLS application protocol KWIK negotiates when the tls.Config names none.
const ALPN = "kwik/1"

// protocolVersion is the KWIK wire protocol version sent in the handshake.
const protocolVersion = 1

// Config configures a KWIK session. The zero value (or nil) is valid: every field documents
// its default. It is taken by Dial and Listen and must not be changed afterwards.
type Config struct {
	// QUIC is passed to quic-go for every path. nil means quic-go's defaults. Its settings of
	// the application's streams apply to KWIK's logical streams, where KWIK's own field is
	// zero: MaxIncomingStreams and MaxIncomingUniStreams (the logical stream limits),
	// MaxStreamReceiveWindow (StreamReceiveWindow), MaxConnectionReceiveWindow
	// (MaxSessionReceiveWindow) and InitialStreamReceiveWindow (the window every logical stream
	// starts with); quic-go keeps its defaults for the real QUIC streams that carry them (at
	// most MaxRealStreams unidirectional ones per path, and a control stream). Settings KWIK
	// cannot honour are refused by Dial and Listen with an error that names them:
	// InitialConnectionReceiveWindow, negative stream limits, RequireStreamCreditRelease,
	// EnableStreamResetPartialDelivery and GetConfigForClient. The rest (timeouts, keep-alives,
	// datagrams, versions, packet sizes, tracer...) applies to every path's connection as in
	// quic-go; Allow0RTT has no effect, since KWIK neither dials nor listens for 0-RTT.
	QUIC *quic.Config

	// StreamsPerRealStream is how many logical streams share one real QUIC stream before the
	// pool opens another. 0 means 4; 1 gives every logical stream a QUIC stream of its own.
	StreamsPerRealStream int

	// MaxRealStreams bounds the real QUIC streams a path uses to send data. Past it, logical
	// streams share the least loaded ones. 0 means 64.
	MaxRealStreams int

	// MaxIncomingStreams is how many bidirectional logical streams the peer may have open at
	// once towards this side; OpenStreamSync on the peer waits beyond it. 0 means
	// QUIC.MaxIncomingStreams, or 100 (as quic-go).
	MaxIncomingStreams int

	// MaxIncomingUniStreams is the same for unidirectional logical streams (OpenUniStream).
	// 0 means QUIC.MaxIncomingUniStreams, or 100 (as quic-go).
	MaxIncomingUniStreams int

	// StreamReceiveWindow is the most receive credit one logical stream keeps ahead of this
	// side's Read, and so the most memory one stream holds. A stream starts with a small
	// initial window and doubles it whenever the application read half of it in less than
	// about two round trips of the paths delivering to it (their RTTs weighted by what each
	// delivered), as quic-go tunes its windows, or once per round trip while the senders use
	// up all the credit (a secondary's credit loop counts as its RTT plus the primary's: the
	// credit reaches the primary, whose delegation reaches the secondary through this side);
	// it does not grow while the reader waits at a gap with half the window buffered above
	// it. A stream that a secondary starts filling (a range delegated to it) gets its whole
	// window at once: its reader then waits at the gaps of the slowest source, and the window
	// holds what the others send meanwhile. 0 means 32 MiB: what three servers of 50 Mbit/s
	// each, 100 ms away, send while one of them recovers a loss (16 MiB ran out there: the
	// reader held at that gap, every sender stopped, then burst and lost hundreds of packets);
	// at most 1 GiB.
	StreamReceiveWindow int

	// MaxSessionReceiveWindow bounds the receive credit of all the session's logical streams
	// together, and so the memory they hold. Every stream starts with its initial window
	// (MaxSessionReceiveWindow/MaxIncomingStreams, at least 512 KiB as in quic-go, and at most
	// StreamReceiveWindow) granted whatever the total; credit beyond it, up to the stream's
	// current window, is lent by the session's budget as the application reads. The receive
	// memory of a session is thus at most MaxSessionReceiveWindow plus the initial windows of
	// its open streams (SessionStats.PeakReceiveBuffered reports what it held). As with QUIC's
	// connection flow control, an application that leaves streams unread while the budget
	// lasts can stall the others. 0 means the larger of 32 MiB and 2 StreamReceiveWindows (64
	// MiB by default); it must be at least StreamReceiveWindow.
	MaxSessionReceiveWindow int

	// MaxMessageSize is the largest message (control frame or data packet, length prefix
	// excluded) this side accepts; the peer sizes its data packets to it. 0 means 64 KiB.
	// It must be between 4 KiB and 16 MiB.
	MaxMessageSize int

	// HandshakeTimeout bounds KWIK's authentication on a new connection: on Dial, from the
	// end of the QUIC handshake (which, as in quic-go, only Dial's context and
	// QUIC.HandshakeIdleTimeout bound) to the primary's offer of a session; on a server, from
	// accepting the QUIC connection (as soon as quic-go has answered the client's first
	// packet) to the client's authentication. It also bounds each secondary path
	// the client joins, QUIC handshake included. 0 means 10 s.
	HandshakeTimeout time.Duration

	// JoinKey is the secret a primary and its secondaries share: the primary signs join tokens
	// with it (AddPath needs it) and a secondary accepts only joins whose token it verifies.
	// nil: the primary cannot add paths and the server accepts no joins.
	JoinKey []byte

	// JoinTokenTTL is how long a join token stays valid. 0 means 15 s.
	JoinTokenTTL time.Duration

	// ListenerRole, for Listen, says which sessions the listener accepts: ListenAny (the zero
	// value) new sessions, in which this server is the primary, and joins as a secondary alike;
	// ListenPrimary new sessions only; ListenSecondary joins only (it needs JoinKey). A
	// secondary should listen with ListenSecondary: otherwise anyone may open a session with it
	// directly, past its primary, and ask it for what it serves. Refused sessions fail their
	// handshake with KWIK_AUTH_FAILED.
	ListenerRole ListenerRole

	// JoinAddresses, on a secondary, are the addresses under which its primaries add it
	// (AddPath's argument, the address clients dial, which may be a relay's or a NAT's). A join
	// token binds that address; a secondary with JoinAddresses refuses tokens issued for any
	// other, so that a client cannot take a token meant for one secondary to another (the
	// listener's own address, as Listener.Addr gives it, is always one of them). Empty: tokens
	// for any address are taken.
	JoinAddresses []string

	// HeartbeatInterval is how often a client sends a heartbeat on each of its secondary
	// paths (which the secondary's QUIC stack acknowledges), and checks that path's liveness.
	// The primary path carries no heartbeat: like a quic-go connection, it stays up while the
	// application uses it or QUIC.KeepAlivePeriod asks for keep-alives, and ends after
	// QUIC.MaxIdleTimeout otherwise. 0 means 1 s.
	HeartbeatInterval time.Duration

	// PathTimeout is how long a client's secondary path may go without receiving a single QUIC
	// packet (acknowledgements and retransmissions included) before the client marks it DEAD;
	// it is checked at every heartbeat, so a dead secondary is found within PathTimeout plus
	// one HeartbeatInterval, while a lossy one that still delivers some packets lives. It does
	// not apply to the primary path, nor to a server's own path: those end with QUIC's idle
	// timeout (QUIC.MaxIdleTimeout, quic-go's default 30 s), and the session with an error
	// for which errors.As(err, new(*quic.IdleTimeoutError)) holds. It must exceed
	// HeartbeatInterval. 0 means 5 s.
	PathTimeout time.Duration

	// DelegationProgressTimeout, on a primary, is how long a delegated range may deliver
	// nothing new before it fails, counted only while the client's reader gives it credit and
	// it is its secondary's next range of the stream (the lowest offset: a secondary sends its
	// ranges in that order). The client enforces it, as it does a dead path's failure: the
	// delegation fails with KWIK_DELEGATION_TIMEOUT (errors.Is(err, ErrDelegationTimeout)),
	// its undelivered suffix is reported to Wait (or to a Write blocked behind it) for the
	// primary to refill, and the secondary is told to stop writing it. A secondary that
	// delivers nothing at all meanwhile has all its delegations failed at once, and new ones
	// refused at once for four timeouts unless it sends something, so a hung one (it
	// accepts, answers heartbeats and never writes) holds a stream for about this long, not
	// forever. It is sent with every delegation. 0 lets the client derive it
	// per path: 1 s or 8 times the round trip of the secondary's path plus the primary's,
	// whichever is larger, plus the time two frames of every stream the secondary serves
	// take at its measured rate, at most 30 s. It must not be negative.
	DelegationProgressTimeout time.Duration

	// MaxPaths bounds the paths of a session, the primary included, on the primary (AddPath
	// fails past it) and on the client (it refuses further joins). 0 means 8.
	MaxPaths int

	// Logger receives KWIK's events (sessions opened and closed, paths added, dead, removed,
	// delegations failed) at Info and Debug level. nil: nothing is logged; the library never
	// prints on its own.
	Logger *slog.Logger

	// MaxPendingRawData bounds the relayed bytes waiting for ReceiveRawData; past it new ones
	// are dropped (and counted). It also bounds what the client holds for one path's relay.
	// 0 means 1 MiB.
	MaxPendingRawData int

	// Compression compresses DataPackets with zstd where it pays (it skips data that does not
	// shrink), towards peers that enabled it too: it is negotiated per path in the handshake.
	// Off by default, and best left off when one session carries both secrets and data an
	// attacker chooses: the size of compressed packets then tells the attacker how much of
	// its guess matched the secret (the CRIME and BREACH attacks on TLS and HTTP).
	Compression bool

	// DisableBatching sends every small write in a DataPacket of its own. By default, small
	// frames of the logical streams that share a real QUIC stream are batched: those that
	// arrive while a write is under way go together in the next packet (a lone frame leaves
	// at once, so batching adds no delay).
	DisableBatching bool

	// AllowPath, on a client, vets every address a primary asks it to join (AddPath): an error
	// refuses the join, and the primary's AddPath fails with KWIK_AUTH_FAILED, without the
	// reason (the client's PathInfo.Reason keeps it). nil allows any address, which lets a
	// primary make its clients dial wherever it likes, their own networks included: a client
	// facing primaries it does not control should set it (kwik get refuses loopback,
	// link-local and private addresses unless told otherwise). It runs on a goroutine of its
	// own before the dial, and may resolve the address: a policy that has not answered
	// within HandshakeTimeout (or by the session's end) fails the join, and holds neither the
	// join nor Close; its goroutine ends when it returns. Whatever the outcome, the primary
	// learns only a code and a generic reason, never the dial's error.
	AllowPath func(address string) error

	// PathTLS, on a client, gives the TLS configuration for joining the secondary at address
	// (as the primary named it), from the one passed to Dial: to trust each server by its own
	// certificate, for instance. nil uses Dial's for every path.
	PathTLS func(address string, base *tls.Config) *tls.Config

	// PathRetry is how a client rejoins a secondary path that died. The zero value retries
	// with the defaults RetryPolicy documents.
	PathRetry RetryPolicy

	// initialWindow is QUIC.InitialStreamReceiveWindow: the window every logical stream starts
	// with, when set (see initialStreamWindow).
	initialWindow uint64
}

// RetryPolicy is how a client rejoins a secondary path that died (never one the primary
// removed). InitialBackoff after the death, it asks the primary for a fresh join token and
// dials the secondary again, the whole try bounded by TryTimeout; each failed try doubles the
// wait, up to MaxBackoff, spread by Jitter, until MaxRetries tries have failed. A rejoined path
// keeps its ID and is ACTIVE again on the client and on the primary (in GetActivePaths, and
// open to new delegations); on the secondary it is a new session from Accept. With the
// defaults, a path that comes back is rejoined within about 16 s of its death, or stays dead
// after the fourth failed try (its PathInfo.Reason says so).
type RetryPolicy struct {
	// MaxRetries is how many tries follow a death. 0 means 4; negative: never retry.
	MaxRetries int
	// InitialBackoff is the wait before the first try. 0 means 500 ms.
	InitialBackoff time.Duration
	// MaxBackoff caps the wait between tries. 0 means 8 s.
	MaxBackoff time.Duration
	// Jitter spreads each wait by up to this fraction either way, so that the clients of a
	// secondary that comes back do not all rejoin at once. 0 means 0.2; negative: none. It
	// must be below 1.
	Jitter float64
	// TryTimeout bounds one try: the token's round trip to the primary, the QUIC handshake
	// and KWIK's authentication. 0 means HandshakeTimeout.
	TryTimeout time.Duration
}

// backoff is the wait before try number try (from 1), jitter included.
func (p *RetryPolicy) backoff(try int, rnd func() float64) time.Duration {
	d := p.InitialBackoff
	for i := 1; i < try && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	return time.Duration(float64(d) * (1 + p.Jitter*(2*rnd()-1)))
}

const (
	defaultStreamsPerRealStream = 4
	defaultMaxRealStreams       = 64
	defaultMaxIncomingStreams   = 100
	defaultStreamReceiveWindow  = 32 << 20
	defaultSessionReceiveWindow = 32 << 20
	minInitialStreamWindow      = 512 << 10 // quic-go's initial stream window
	defaultMaxMessageSize       = 64 << 10
	defaultHandshakeTimeout     = 10 * time.Second
	defaultJoinTokenTTL         = 15 * time.Second
	defaultHeartbeatInterval    = time.Second
	defaultPathTimeout          = 5 * time.Second
	defaultMaxPaths             = 8
	defaultMaxPendingRawData    = 1 << 20
	defaultMaxRetries           = 4
	defaultInitialBackoff       = 500 * time.Millisecond
	defaultMaxBackoff           = 8 * time.Second
	defaultJitter               = 0.2
	minMessageSize              = 4 << 10
	maxMessageSize              = 16 << 20
	maxStreamReceiveWindow      = 1 << 30
)

// defaultIdleTimeout is quic-go's MaxIdleTimeout when the QUIC config leaves it zero.
const defaultIdleTimeout = 30 * time.Second

// answerTimeout bounds a server's wait for the client's answer to a request (RemovePath,
// SendRawData): an honest client answers unless the path dies, which QUIC finds within its idle
// timeout, so the session's end, with QUIC's error, comes first; past it the request fails with
// KWIK_PATH_DEAD (a client that does not answer). c is populated.
func (c *Config) answerTimeout() time.Duration {
	idle := c.QUIC.MaxIdleTimeout
	if idle <= 0 {
		idle = defaultIdleTimeout
	}
	return idle + c.PathTimeout
}

// initialStreamWindow is the credit every stream starts with (see MaxSessionReceiveWindow).
// c is populated.
func (c *Config) initialStreamWindow() uint64 {
	if c.initialWindow > 0 {
		return min(c.initialWindow, uint64(c.StreamReceiveWindow))
	}
	w := max(c.MaxSessionReceiveWindow/c.MaxIncomingStreams, minInitialStreamWindow)
	return uint64(min(c.StreamReceiveWindow, w))
}

// populate returns a copy of c with every default filled in, or an error for a bad value.
func (c *Config) populate() (*Config, error) {
	var conf Config
	if c != nil {
		conf = *c
	}
	q, err := conf.takeQUICStreamSettings()
	if err != nil {
		return nil, err
	}
	if conf.StreamsPerRealStream < 0 || conf.MaxRealStreams < 0 || conf.MaxIncomingStreams < 0 ||
		conf.StreamReceiveWindow < 0 || conf.MaxMessageSize < 0 || conf.HandshakeTimeout < 0 ||
		conf.JoinTokenTTL < 0 || conf.HeartbeatInterval < 0 || conf.PathTimeout < 0 || conf.MaxPaths < 0 ||
		conf.MaxPendingRawData < 0 || conf.DelegationProgressTimeout < 0 || conf.PathRetry.InitialBackoff < 0 || conf.PathRetry.MaxBackoff < 0 ||
		conf.PathRetry.TryTimeout < 0 {
		return nil, invalidConfig("kwik: negative value in Config")
	}
	if conf.ListenerRole < ListenAny || conf.ListenerRole > ListenSecondary {
		return nil, invalidConfig(fmt.Sprintf("kwik: unknown ListenerRole %d", int(conf.ListenerRole)))
	}
	if conf.ListenerRole == ListenSecondary && len(conf.JoinKey) == 0 {
		return nil, invalidConfig("kwik: a secondary-only listener needs Config.JoinKey")
	}
	if conf.StreamsPerRealStream == 0 {
		conf.StreamsPerRealStream = defaultStreamsPerRealStream
	}
	if conf.MaxRealStreams == 0 {
		conf.MaxRealStreams = defaultMaxRealStreams
	}
	if conf.MaxIncomingStreams == 0 {
		conf.MaxIncomingStreams = defaultMaxIncomingStreams
	}
	if conf.MaxIncomingUniStreams < 0 {
		return nil, invalidConfig("kwik: negative MaxIncomingUniStreams")
	}
	if conf.MaxIncomingUniStreams == 0 {
		conf.MaxIncomingUniStreams = defaultMaxIncomingStreams
	}
	streamWindowDefault := conf.StreamReceiveWindow == 0
	if streamWindowDefault {
		conf.StreamReceiveWindow = defaultStreamReceiveWindow
	}
	if conf.StreamReceiveWindow > maxStreamReceiveWindow {
		return nil, invalidConfig(fmt.Sprintf("kwik: StreamReceiveWindow %d above %d", conf.StreamReceiveWindow, maxStreamReceiveWindow))
	}
	if conf.MaxSessionReceiveWindow < 0 {
		return nil, invalidConfig("kwik: negative MaxSessionReceiveWindow")
	}
	if conf.MaxSessionReceiveWindow == 0 {
		conf.MaxSessionReceiveWindow = max(defaultSessionReceiveWindow, 2*conf.StreamReceiveWindow)
	}
	if conf.MaxSessionReceiveWindow < conf.StreamReceiveWindow && streamWindowDefault {
		conf.StreamReceiveWindow = conf.MaxSessionReceiveWindow // a session budget set alone
	}
	if conf.MaxSessionReceiveWindow < conf.StreamReceiveWindow {
		return nil, invalidConfig(fmt.Sprintf("kwik: MaxSessionReceiveWindow %d below StreamReceiveWindow %d", conf.MaxSessionReceiveWindow, conf.StreamReceiveWindow))
	}
	if conf.MaxMessageSize == 0 {
		conf.MaxMessageSize = defaultMaxMessageSize
	}
	if conf.MaxMessageSize < minMessageSize || conf.MaxMessageSize > maxMessageSize {
		return nil, invalidConfig(fmt.Sprintf("kwik: MaxMessageSize %d outside [%d, %d]", conf.MaxMessageSize, minMessageSize, maxMessageSize))
	}
	if wire.MaxFrameData(conf.MaxMessageSize) <= 0 {
		return nil, invalidConfig(fmt.Sprintf("kwik: MaxMessageSize %d leaves no room for data", conf.MaxMessageSize))
	}
	if conf.HandshakeTimeout == 0 {
		conf.HandshakeTimeout = defaultHandshakeTimeout
	}
	if conf.JoinTokenTTL == 0 {
		conf.JoinTokenTTL = defaultJoinTokenTTL
	}
	if conf.HeartbeatInterval == 0 {
		conf.HeartbeatInterval = defaultHeartbeatInterval
	}
	if conf.PathTimeout == 0 {
		conf.PathTimeout = max(defaultPathTimeout, 2*conf.HeartbeatInterval)
	}
	if conf.PathTimeout <= conf.HeartbeatInterval {
		return nil, invalidConfig(fmt.Sprintf("kwik: PathTimeout %v must exceed HeartbeatInterval %v", conf.PathTimeout, conf.HeartbeatInterval))
	}
	if conf.MaxPaths == 0 {
		conf.MaxPaths = defaultMaxPaths
	}
	if conf.MaxPendingRawData == 0 {
		conf.MaxPendingRawData = defaultMaxPendingRawData
	}
	r := &conf.PathRetry
	if r.MaxRetries == 0 {
		r.MaxRetries = defaultMaxRetries
	}
	if r.InitialBackoff == 0 {
		r.InitialBackoff = defaultInitialBackoff
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = max(defaultMaxBackoff, r.InitialBackoff)
	}
	switch {
	case r.Jitter == 0:
		r.Jitter = defaultJitter
	case r.Jitter < 0:
		r.Jitter = 0
	case r.Jitter >= 1:
		return nil, invalidConfig(fmt.Sprintf("kwik: PathRetry.Jitter %v must be below 1", r.Jitter))
	}
	if r.TryTimeout == 0 {
		r.TryTimeout = conf.HandshakeTimeout
	}
	if conf.Logger == nil {
		conf.Logger = slog.New(slog.DiscardHandler)
	}
	// KWIK's data travels on real unidirectional streams, at most MaxRealStreams per path.
	q.MaxIncomingUniStreams = int64(conf.MaxRealStreams)
	conf.QUIC = q
	return &conf, nil
}

// The QUIC receive windows of a path's real streams and connection: all open from the start
// (quic-go's auto-tuning starts at 512 KiB and grows with a reader that keeps up). KWIK's own
// credit bounds what the application has not read; these only bound what quic-go holds behind
// a lost packet, until its retransmission arrives (one to two round trips): a window below the
// path's rate times that stops the sender outright, where striping's connections only slow
// down. At 100 ms one way, a 64 KiB Write of the primary's waited 290 ms for the hole to fill
// under quic-go's defaults. quic-go's own maximum per connection is 15 MiB.
const (
	realStreamWindow = 16 << 20
	realConnWindow   = 16 << 20
)

// takeQUICStreamSettings moves the QUIC settings of the application's streams to KWIK's
// fields for logical streams (see Config.QUIC), refuses those KWIK cannot honour, and returns
// the QUIC config for the real connections, whose windows are KWIK's (realStreamWindow).
func (c *Config) takeQUICStreamSettings() (*quic.Config, error) {
	var q quic.Config
	if c.QUIC != nil {
		q = *c.QUIC
	}
	switch {
	case q.InitialConnectionReceiveWindow != 0:
		return nil, invalidConfig("kwik: QUIC.InitialConnectionReceiveWindow is not supported: a session's streams share MaxSessionReceiveWindow (or QUIC.MaxConnectionReceiveWindow), lent as they read")
	case q.RequireStreamCreditRelease:
		return nil, invalidConfig("kwik: QUIC.RequireStreamCreditRelease is not supported: a logical stream's credit is released when both its halves end")
	case q.EnableStreamResetPartialDelivery:
		return nil, invalidConfig("kwik: QUIC.EnableStreamResetPartialDelivery is not supported by logical streams")
	case q.GetConfigForClient != nil:
		return nil, invalidConfig("kwik: QUIC.GetConfigForClient is not supported: a listener's Config applies to every session")
	case q.MaxIncomingStreams < 0 || q.MaxIncomingUniStreams < 0:
		return nil, invalidConfig("kwik: negative QUIC.MaxIncomingStreams or MaxIncomingUniStreams is not supported: set a limit of 1 or more")
	}
	take := func(name string, kwik *int, v uint64) error {
		if v == 0 {
			return nil
		}
		if v > 1<<40 {
			v = 1 << 40
		}
		if *kwik != 0 && uint64(*kwik) != v {
			return invalidConfig(fmt.Sprintf("kwik: QUIC.%s (%d) and Config's own setting (%d) differ: set one", name, v, *kwik))
		}
		*kwik = int(v)
		return nil
	}
	if err := errors.Join(
		take("MaxIncomingStreams", &c.MaxIncomingStreams, uint64(q.MaxIncomingStreams)),
		take("MaxIncomingUniStreams", &c.MaxIncomingUniStreams, uint64(q.MaxIncomingUniStreams)),
		take("MaxStreamReceiveWindow", &c.StreamReceiveWindow, q.MaxStreamReceiveWindow),
		take("MaxConnectionReceiveWindow", &c.MaxSessionReceiveWindow, q.MaxConnectionReceiveWindow),
	); err != nil {
		return nil, err
	}
	c.initialWindow = q.InitialStreamReceiveWindow
	// Listeners are quic-go's early ones (for the offer, handshake.go), which would take 0-RTT
	// data with Allow0RTT: replayable requests, sessions queued before the client's address
	// is validated. KWIK takes none.
	q.Allow0RTT = false
	q.MaxIncomingStreams, q.MaxIncomingUniStreams = 0, 0
	q.InitialStreamReceiveWindow, q.MaxStreamReceiveWindow = realStreamWindow, realStreamWindow
	q.InitialConnectionReceiveWindow, q.MaxConnectionReceiveWindow = realConnWindow, realConnWindow
	return &q, nil
}

// tlsConfig returns the TLS config to use: the caller's, with KWIK's ALPN when it names none.
func tlsConfig(c *tls.Config) (*tls.Config, error) {
	if c == nil {
		return nil, invalidConfig("kwik: a tls.Config is required")
	}
	if len(c.NextProtos) > 0 {
		return c, nil
	}
	c = c.Clone()
	c.NextProtos = []string{ALPN}
	return c, nil
}
