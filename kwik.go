package kwik

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/quic-go/quic-go"
)

// Role is the part a side plays in a session.
type Role int

// The three roles of a KWIK session.
const (
	RoleClient    Role = iota // dialed the primary
	RolePrimary               // accepted the client's Dial; owns the session
	RoleSecondary             // joined at the primary's request; serves delegated ranges
)

// String returns client, primary or secondary.
func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RolePrimary:
		return "primary"
	case RoleSecondary:
		return "secondary"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// PathStatus is the state of one path of a session.
type PathStatus int

// Path states, as in the wire protocol's PathStatus.
const (
	PathActive        PathStatus = iota // joined and carrying traffic
	PathDead                            // silent for PathTimeout, or its connection failed
	PathConnecting                      // being joined: AddPath has not returned yet
	PathDisconnecting                   // being removed
	PathRemoved                         // removed by the primary (RemovePath)
)

// String returns the status in lower case, as in the wire protocol's names.
func (s PathStatus) String() string {
	switch s {
	case PathActive:
		return "active"
	case PathDead:
		return "dead"
	case PathConnecting:
		return "connecting"
	case PathDisconnecting:
		return "disconnecting"
	case PathRemoved:
		return "removed"
	}
	return fmt.Sprintf("PathStatus(%d)", int(s))
}

// PathInfo describes one path of a session as this side knows it.
type PathInfo struct {
	PathID     string     // the path's ID, the same on every side of the session
	Address    string     // the address that was dialed (for the primary path: the remote address)
	IsPrimary  bool       // the path between the client and the primary
	Status     PathStatus // as this side last learned it
	CreatedAt  time.Time  // when this side created the path
	LastActive time.Time  // last time anything was received on the path
	Reason     string     // why the path is dead or removed (and what rejoining it gave)
}

// RawData is a message relayed by SendRawData.
type RawData struct {
	Data []byte // the message, as the client delivered it
	// From is the path ID of the server that sent it, as the client claims: the client relays
	// raw data, reads it, and may send its own with any From. A server acts on raw data from
	// another server only through SendOrder and OpenOrder, which authenticate the sender.
	From string
}

// Session is a KWIK session: on the client, an aggregate of paths to a primary and its
// secondaries; on a server, its own path of that aggregate.
type Session interface {
	// OpenStreamSync opens a logical stream, waiting while the peer allows no more.
	OpenStreamSync(ctx context.Context) (Stream, error)
	// OpenStream opens a logical stream, or fails with ErrStreamLimit when the peer allows no more.
	// Opening costs no round trip: the peer learns of the stream with its first frame.
	OpenStream() (Stream, error)
	// AcceptStream returns the next stream the peer opened.
	AcceptStream(ctx context.Context) (Stream, error)
	// OpenUniStream opens a unidirectional logical stream (this side sends, the peer
	// receives), or fails with ErrStreamLimit when the peer allows no more.
	OpenUniStream() (SendStream, error)
	// OpenUniStreamSync opens a unidirectional logical stream, waiting while the peer allows
	// no more.
	OpenUniStreamSync(ctx context.Context) (SendStream, error)
	// AcceptUniStream returns the next unidirectional stream the peer opened.
	AcceptUniStream(ctx context.Context) (ReceiveStream, error)

	// SendDatagram sends an unreliable datagram (RFC 9221) on the primary path, when both
	// sides enabled QUIC.EnableDatagrams; it fails as quic-go's does otherwise, or with a
	// *quic.DatagramTooLargeError. Datagrams never travel through secondaries.
	SendDatagram(payload []byte) error
	// ReceiveDatagram returns the next datagram received on the primary path.
	ReceiveDatagram(ctx context.Context) ([]byte, error)
	// ConnectionState is the primary path's QUIC connection state: TLS (ALPN, peer
	// certificates...), datagram support.
	ConnectionState() quic.ConnectionState
	// HandshakeComplete is closed once the handshake is complete: a session returned by Dial
	// or Accept has completed it (QUIC's and KWIK's), so it is always closed.
	HandshakeComplete() <-chan struct{}

	// AddPath asks the client to join the server at address (primary only; elsewhere
	// ErrNotPrimary). It returns once the client has answered: nil means the path is active.
	AddPath(address string) error
	// JoinPath is AddPath without the wait: it returns the new path's ID at once (the path is
	// PathConnecting until the client answers) and a channel that then receives what AddPath
	// would return. A request refused before it is sent returns "" and its error on the
	// channel. Ranges may be delegated to the path at once (Stream.Delegate, Fanout, a
	// FanoutOptions.Joining channel): the client holds them until the path is active, then
	// hands them to the secondary, and fails them if the join fails; the secondary's first
	// bytes come a round trip sooner than after AddPath returns.
	JoinPath(address string) (pathID string, result <-chan error)
	// RemovePath closes a secondary path (primary only; elsewhere ErrNotPrimary).
	RemovePath(pathID string) error
	// GetActivePaths, GetDeadPaths and GetAllPaths report the session's paths as this side knows them.
	GetActivePaths() []PathInfo
	GetDeadPaths() []PathInfo // dead and removed paths
	GetAllPaths() []PathInfo  // every path, in creation order

	// SendRawData relays data through the client to the server on pathID.
	SendRawData(data []byte, pathID string) error
	// ReceiveRawData returns the next relayed message.
	ReceiveRawData(ctx context.Context) (RawData, error)

	// Stats returns a snapshot of the session's paths and their traffic.
	Stats() SessionStats

	// ID is the session ID, the same on the client, the primary and every secondary.
	ID() string
	Role() Role // client, primary or secondary
	// Context is canceled when the session closes; context.Cause gives the reason.
	Context() context.Context
	LocalAddr() net.Addr  // of this side's QUIC connection on its own path
	RemoteAddr() net.Addr // of the peer on that connection
	// CloseWithError closes the session on every side; pending and later calls on both sides
	// return an *ApplicationError carrying code and msg.
	CloseWithError(code ApplicationErrorCode, msg string) error
	// Close is CloseWithError(0, "").
	Close() error
}

// SendStream is a unidirectional logical stream opened by this side (OpenUniStream): the send
// half of a Stream, as quic-go's SendStream.
type SendStream interface {
	io.WriteCloser // Close sends the fin: the peer's Read returns io.EOF after the data
	// CancelWrite abandons the stream; the peer's Read fails with a *StreamError carrying code.
	CancelWrite(code StreamErrorCode)
	// SetWriteDeadline makes a blocked Write fail with a net.Error whose Timeout is true.
	SetWriteDeadline(t time.Time) error
	// Context is canceled once the stream is closed or canceled, or the session ends.
	Context() context.Context
	StreamID() uint64 // the logical stream ID, as quic-go numbers streams
	PathID() string   // the path the stream lives on
}

// ReceiveStream is a unidirectional logical stream the peer opened (AcceptUniStream): the
// receive half of a Stream, as quic-go's ReceiveStream.
type ReceiveStream interface {
	io.Reader
	// CancelRead abandons the stream; the peer's Write fails with a *StreamError carrying code.
	CancelRead(code StreamErrorCode)
	// SetReadDeadline makes a blocked Read fail with a net.Error whose Timeout is true.
	SetReadDeadline(t time.Time) error
	StreamID() uint64 // the logical stream ID, as quic-go numbers streams
	PathID() string   // the path the stream lives on
}

// Stream is a logical KWIK stream. As in QUIC, it is bidirectional and Close closes only the
// write side; Read returns io.EOF once the peer has closed and every byte has been read.
type Stream interface {
	io.ReadWriteCloser
	// CancelRead abandons the read side; the peer's Write fails with a *StreamError carrying code.
	CancelRead(code StreamErrorCode)
	// CancelWrite abandons the write side; the peer's Read fails with a *StreamError carrying code.
	CancelWrite(code StreamErrorCode)
	// SetDeadline sets both deadlines. An expired deadline makes Read or Write fail with a
	// net.Error whose Timeout is true; the zero time means none.
	SetDeadline(t time.Time) error
	SetReadDeadline(t time.Time) error  // see SetDeadline
	SetWriteDeadline(t time.Time) error // see SetDeadline
	// Context is canceled once the write side is closed or canceled, or the session ends.
	Context() context.Context
	// StreamID is the logical stream ID, the same on the client and the servers.
	StreamID() uint64
	// PathID is the path the stream lives on.
	PathID() string

	// Delegate reserves the next length bytes of the stream for the secondary on pathID
	// (primary only): an active path, or one still joining (Session.JoinPath), whose ranges
	// the client holds until the join ends.
	Delegate(pathID string, length int64, request []byte) (*Delegation, error)
	// WriteAt fills a reserved range that a failed delegation left undelivered (primary only).
	WriteAt(p []byte, off int64) (int, error)
}
