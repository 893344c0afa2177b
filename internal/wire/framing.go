package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/kwik-go/kwik/internal/wire/pb"
)

// ErrMalformed is wrapped by every error that reports bytes that are not a valid KWIK message, so
// a session can answer all of them the same way (KWIK_INVALID_FRAME) with errors.Is.
var ErrMalformed = errors.New("kwik/wire: malformed message")

var (
	errLengthOverflow = fmt.Errorf("%w: length prefix overflows 64 bits", ErrMalformed)
	errNilFrame       = errors.New("kwik/wire: ParseControlFrame into a nil frame")
)

// MessageTooLargeError reports a length prefix above the reader's maximum. It is distinct from
// ErrMalformed because the message may be well formed, only larger than this peer agreed to take
// (KWIK_PACKET_TOO_LARGE rather than KWIK_INVALID_FRAME).
type MessageTooLargeError struct {
	Size, Max uint64 // the announced length, and the limit
}

// Error gives both lengths.
func (e *MessageTooLargeError) Error() string {
	return fmt.Sprintf("kwik/wire: message of %d bytes exceeds the maximum of %d", e.Size, e.Max)
}

const (
	// readBufferSize is the bufio buffer: large enough that small messages cost one Read on the
	// stream for many of them, small enough to keep per-stream memory modest. bufio hands reads at
	// least this large straight to the stream, so large bodies are not copied twice.
	readBufferSize = 64 << 10
	// firstBodyBuffer bounds the body buffer a single length prefix can make us allocate before
	// the body's bytes arrive; past it the buffer grows with the data actually received.
	firstBodyBuffer = readBufferSize
)

// Reader reads length-prefixed messages from a stream. It never assumes one Read is one message.
//
// Errors are sticky: once Next fails, the stream is positioned at an unknown place inside a
// message, so every later call returns the same error.
type Reader struct {
	src  errByteReader
	max  uint64
	body []byte // reused for every message; its capacity never exceeds max
	err  error
}

// errByteReader lets binary.ReadUvarint read the length prefix while remembering whether a
// failure came from the stream, so an overflowing varint, which ReadUvarint reports with an
// unexported error, can be told apart from a transport error and reported as ErrMalformed.
type errByteReader struct {
	*bufio.Reader
	err error
}

func (r *errByteReader) ReadByte() (byte, error) {
	c, err := r.Reader.ReadByte()
	if err != nil {
		r.err = err
	}
	return c, err
}

// NewReader returns a Reader of messages of at most maxSize bytes (prefix excluded) from r.
// A negative maxSize is taken as 0.
func NewReader(r io.Reader, maxSize int) *Reader {
	rd := &Reader{src: errByteReader{Reader: bufio.NewReaderSize(r, readBufferSize)}}
	rd.SetMaxSize(maxSize)
	return rd
}

// SetMaxSize changes the largest message Next accepts, for instance once the peer's transport
// parameters are known. Lowering it also releases a body buffer larger than the new maximum.
// A negative n is taken as 0.
func (r *Reader) SetMaxSize(n int) {
	n = max(n, 0)
	r.max = uint64(n)
	if cap(r.body) > n {
		r.body = nil
	}
}

// Next returns the next message body; it is valid until the next call. A length above the max
// size returns a *MessageTooLargeError before allocating or reading the body. A clean end of
// stream at a message boundary returns io.EOF, and an end inside a message or its length
// io.ErrUnexpectedEOF. A length prefix longer than 10 bytes or above 2^64-1 returns an error
// wrapping ErrMalformed. Other errors are the stream's own.
func (r *Reader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	body, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	return body, nil
}

func (r *Reader) next() ([]byte, error) {
	size, err := binary.ReadUvarint(&r.src)
	if err != nil {
		if r.src.err == nil {
			return nil, errLengthOverflow
		}
		return nil, err // io.EOF, or io.ErrUnexpectedEOF after part of the prefix, or the stream's
	}
	if size > r.max {
		return nil, &MessageTooLargeError{Size: size, Max: r.max}
	}
	n := int(size) // size <= r.max, which came from an int
	if n <= cap(r.body) {
		body := r.body[:n]
		if _, err := io.ReadFull(r.src.Reader, body); err != nil {
			return nil, unexpectedEOF(err)
		}
		return body, nil
	}
	return r.grow(n)
}

// grow reads a body larger than the body buffer. It grows the buffer as the bytes arrive rather
// than to the announced length at once, so a peer that sends a length and then stalls on many
// streams ties up at most firstBodyBuffer per stream instead of the maximum message size.
func (r *Reader) grow(n int) ([]byte, error) {
	body := r.body[:0]
	for len(body) < n {
		if len(body) == cap(body) {
			c := n
			if cap(body) < n/2 { // doubling cannot overflow
				c = max(2*cap(body), min(n, firstBodyBuffer))
			}
			nb := make([]byte, len(body), c)
			copy(nb, body)
			body = nb
			r.body = nb // keep it even if the read fails: the next message reuses it
		}
		m, err := io.ReadFull(r.src.Reader, body[len(body):min(cap(body), n)])
		body = body[:len(body)+m]
		if err != nil {
			return nil, unexpectedEOF(err)
		}
	}
	return body, nil
}

// unexpectedEOF maps the io.EOF that io.ReadFull returns when it read nothing: once the length
// is read, an end of stream always cuts a message short.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// AppendControlFrame appends f to b, preceded by its length as a varint, in one pass and without
// allocating when b has room for it. It only fails if f cannot be marshalled (a string field that
// is not valid UTF-8); b is then returned unchanged.
func AppendControlFrame(b []byte, f *pb.ControlFrame) ([]byte, error) {
	size := proto.Size(f)
	start := len(b)
	b = slices.Grow(b, protowire.SizeVarint(uint64(size))+size)
	b = protowire.AppendVarint(b, uint64(size))
	// UseCachedSize: proto.Size just measured f and every submessage; without it MarshalAppend
	// would walk the whole message again to size it.
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, f)
	if err != nil {
		return b[:start], fmt.Errorf("kwik/wire: marshal control frame: %w", err)
	}
	return out, nil
}

// ParseControlFrame parses a control frame body, as returned by Reader.Next, into f, replacing
// what f held. f keeps no reference to body. Unknown fields are kept, so a frame from a newer
// peer survives a re-marshal.
func ParseControlFrame(body []byte, f *pb.ControlFrame) error {
	if f == nil {
		return errNilFrame
	}
	if err := proto.Unmarshal(body, f); err != nil {
		return fmt.Errorf("%w: control frame: %w", ErrMalformed, err)
	}
	return nil
}
