package kwik

import (
	"errors"
	"fmt"
	"os"

	"github.com/quic-go/quic-go"
)

// ErrorCode is one of KWIK's own error codes (the seed's KWIK_* codes).
type ErrorCode uint64

// KWIK's error codes. Their numeric values are part of the wire protocol (docs/PROTOCOL.md).
const (
	CodePathNotFound       ErrorCode = 1  // KWIK_PATH_NOT_FOUND
	CodePathDead           ErrorCode = 2  // KWIK_PATH_DEAD
	CodeInvalidFrame       ErrorCode = 3  // KWIK_INVALID_FRAME
	CodeAuthFailed         ErrorCode = 4  // KWIK_AUTH_FAILED
	CodeStreamCreateFailed ErrorCode = 5  // KWIK_STREAM_CREATE_FAILED
	CodePacketTooLarge     ErrorCode = 6  // KWIK_PACKET_TOO_LARGE
	CodeOffsetMismatch     ErrorCode = 7  // KWIK_OFFSET_MISMATCH
	CodeFlowControl        ErrorCode = 8  // KWIK_FLOW_CONTROL: data beyond the granted credit
	CodeInternal           ErrorCode = 9  // KWIK_INTERNAL
	CodePathRemoved        ErrorCode = 10 // KWIK_PATH_REMOVED: the primary removed the path
	// KWIK_CONNECTION_REFUSED: the server's accept queue is full, or it is closing. The client
	// reports it as quic-go does: a *quic.TransportError with code quic.ConnectionRefused.
	CodeConnectionRefused ErrorCode = 11
	// KWIK_DELEGATION_TIMEOUT: a delegated range delivered nothing new for its progress
	// deadline (Config.DelegationProgressTimeout) while it had credit and was its
	// secondary's next range.
	CodeDelegationTimeout ErrorCode = 12
	// KWIK_DIGEST_MISMATCH: a delegated range's bytes did not hash to the digest the primary
	// gave for them (a stale or lying secondary): the client discarded them.
	CodeDigestMismatch ErrorCode = 13
)

var codeNames = map[ErrorCode]string{
	CodePathNotFound:       "KWIK_PATH_NOT_FOUND",
	CodePathDead:           "KWIK_PATH_DEAD",
	CodeInvalidFrame:       "KWIK_INVALID_FRAME",
	CodeAuthFailed:         "KWIK_AUTH_FAILED",
	CodeStreamCreateFailed: "KWIK_STREAM_CREATE_FAILED",
	CodePacketTooLarge:     "KWIK_PACKET_TOO_LARGE",
	CodeOffsetMismatch:     "KWIK_OFFSET_MISMATCH",
	CodeFlowControl:        "KWIK_FLOW_CONTROL",
	CodeInternal:           "KWIK_INTERNAL",
	CodePathRemoved:        "KWIK_PATH_REMOVED",
	CodeConnectionRefused:  "KWIK_CONNECTION_REFUSED",
	CodeDelegationTimeout:  "KWIK_DELEGATION_TIMEOUT",
	CodeDigestMismatch:     "KWIK_DIGEST_MISMATCH",
}

// String returns the code's protocol name, such as KWIK_INVALID_FRAME.
func (c ErrorCode) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("KWIK_ERROR_%d", uint64(c))
}

// kwikCodeBase is where KWIK's codes sit in QUIC's application error space when KWIK itself
// closes a connection: 0x4b574b00 + code ("KWK\0"). Applications should not use that range.
const kwikCodeBase quic.ApplicationErrorCode = 0x4b574b00

// Error is a KWIK protocol error. errors.Is matches it against the Err* sentinels by code.
type Error struct {
	Code    ErrorCode // what went wrong
	Message string    // detail for people, not for matching
	Remote  bool      // the peer reported it
}

// Error returns the code, whether the peer reported it, and the message.
func (e *Error) Error() string {
	s := "kwik: " + e.Code.String()
	if e.Remote {
		s += " (remote)"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is reports whether target is a *Error with the same code, so that
// errors.Is(err, kwik.ErrInvalidFrame) holds for every KWIK_INVALID_FRAME error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is, one per code.
var (
	ErrPathNotFound       = &Error{Code: CodePathNotFound}
	ErrPathDead           = &Error{Code: CodePathDead}
	ErrInvalidFrame       = &Error{Code: CodeInvalidFrame}
	ErrAuthFailed         = &Error{Code: CodeAuthFailed}
	ErrStreamCreateFailed = &Error{Code: CodeStreamCreateFailed}
	ErrPacketTooLarge     = &Error{Code: CodePacketTooLarge}
	ErrOffsetMismatch     = &Error{Code: CodeOffsetMismatch}
	ErrFlowControl        = &Error{Code: CodeFlowControl}
	ErrPathRemoved        = &Error{Code: CodePathRemoved}
	ErrDelegationTimeout  = &Error{Code: CodeDelegationTimeout}
	ErrDigestMismatch     = &Error{Code: CodeDigestMismatch}
)

// ErrWrongRole is matched (errors.Is) by what an operation returns on a session whose role
// may not do it: a client's SendOrder or ReceiveRawData, ServeFanout on anything but a
// secondary's session. ErrNotPrimary matches it too.
var ErrWrongRole = errors.New("kwik: not an operation of this session's role")

// ErrNotPrimary is returned by operations that only the primary server of a session may do.
// It matches ErrWrongRole as well.
var ErrNotPrimary error = &detailError{msg: "kwik: only the primary server may do this", is: ErrWrongRole}

// ErrInvalidConfig is matched (errors.Is) by every error Dial, Listen and the other
// constructors return for a Config (or tls.Config) they refuse; the message says which setting.
var ErrInvalidConfig = errors.New("kwik: invalid Config")

// ErrNoJoinKey is matched (errors.Is) by what AddPath and SendOrder return when the session's
// Config has no JoinKey: they need the key the primary shares with its secondaries.
var ErrNoJoinKey = errors.New("kwik: Config.JoinKey is required")

// ErrInvalidArgument is matched (errors.Is) by what an operation returns for an argument out
// of its range: an empty AddPath address, a Delegate length or digests that do not fit, a
// negative WriteAt offset. The message says which.
var ErrInvalidArgument = errors.New("kwik: invalid argument")

// ErrPrimaryPath is returned by the operations that name a secondary's path when they are given
// the primary path: RemovePath (the primary path cannot be removed) and Delegate (the primary
// writes its own bytes with Write).
var ErrPrimaryPath = errors.New("kwik: the primary path cannot be removed or delegated to")

// detailError is an error with a message of its own that errors.Is matches against a sentinel,
// so that the message can name the setting or argument while callers match the condition.
type detailError struct {
	msg string
	is  error
}

func (e *detailError) Error() string { return e.msg }
func (e *detailError) Unwrap() error { return e.is }

func invalidConfig(msg string) error   { return &detailError{msg: msg, is: ErrInvalidConfig} }
func invalidArgument(msg string) error { return &detailError{msg: msg, is: ErrInvalidArgument} }

// ErrServerClosed is returned by Listener.Accept after Close.
var ErrServerClosed = quic.ErrServerClosed

// ErrStreamLimit is returned by OpenStream (and OpenUniStream) when the peer allows no more
// concurrent streams; OpenStreamSync waits instead. It is a *quic.StreamLimitReachedError, as
// quic-go returns, so that errors.As(err, new(*quic.StreamLimitReachedError)) checks written
// for quic-go keep working.
var ErrStreamLimit error = &quic.StreamLimitReachedError{}

// ErrWriteAfterClose is returned by Write after Close, and is the cause of a stream's context
// once Close was called: quic-go's ErrStreamClosed.
var ErrWriteAfterClose = quic.ErrStreamClosed

// ApplicationError is the error a session's operations return after CloseWithError, on both sides
// (Remote tells which side closed). It is quic-go's own type, so existing error handling keeps working.
type ApplicationError = quic.ApplicationError

// ApplicationErrorCode is an application-defined session error code.
type ApplicationErrorCode = quic.ApplicationErrorCode

// StreamError is returned by stream operations after CancelRead or CancelWrite, on either side.
// Its StreamID is the logical KWIK stream ID.
type StreamError = quic.StreamError

// StreamErrorCode is an application-defined stream error code.
type StreamErrorCode = quic.StreamErrorCode

// deadlineError is what Read and Write return when a deadline passes: a net.Error whose Timeout
// is true, matching os.ErrDeadlineExceeded as the standard library's own deadlines do.
type deadlineError struct{}

func (deadlineError) Error() string        { return "kwik: deadline exceeded" }
func (deadlineError) Timeout() bool        { return true }
func (deadlineError) Temporary() bool      { return true }
func (deadlineError) Is(target error) bool { return target == os.ErrDeadlineExceeded }

var errDeadline error = deadlineError{}

// closeError turns the error a QUIC connection closed with into what KWIK reports: KWIK's own
// codes become *Error, everything else (application close, idle timeout) passes through.
func closeError(err error) error {
	var appErr *quic.ApplicationError
	if errors.As(err, &appErr) && appErr.ErrorCode >= kwikCodeBase && appErr.ErrorCode < kwikCodeBase+256 {
		return kwikError(ErrorCode(appErr.ErrorCode-kwikCodeBase), appErr.ErrorMessage, appErr.Remote)
	}
	return err
}

// kwikError is the error for a KWIK code: an *Error, except for KWIK_CONNECTION_REFUSED, which
// is reported as quic-go reports a refused connection.
func kwikError(code ErrorCode, msg string, remote bool) error {
	if code == CodeConnectionRefused {
		return &quic.TransportError{Remote: remote, ErrorCode: quic.ConnectionRefused, ErrorMessage: msg}
	}
	return &Error{Code: code, Message: msg, Remote: remote}
}
