package wire

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/kwik-go/kwik/internal/wire/pb"
)

// frame returns body behind its varint length.
func frame(body []byte) []byte {
	return append(protowire.AppendVarint(nil, uint64(len(body))), body...)
}

func concat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

// pattern returns n bytes that differ from one message to the next, so that a body read from the
// wrong place shows.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// chunkings are the ways a stream may hand its bytes to the Reader.
var chunkings = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"coalesced", func(r io.Reader) io.Reader { return r }},
	{"one byte per read", iotest.OneByteReader},
	{"half reads", iotest.HalfReader},
	{"EOF with data", iotest.DataErrReader},
}

func TestReader(t *testing.T) {
	big := pattern(200<<10, 3) // above the bufio buffer and the first body buffer
	tests := []struct {
		name    string
		stream  []byte
		max     int
		want    [][]byte
		wantErr error // io.EOF, io.ErrUnexpectedEOF, ErrMalformed or *MessageTooLargeError
		tooBig  *MessageTooLargeError
	}{
		{name: "empty stream", max: 10, wantErr: io.EOF},
		{name: "zero-length message", stream: frame(nil), max: 10, want: [][]byte{{}}, wantErr: io.EOF},
		{
			name:    "several messages",
			stream:  concat(frame(pattern(1, 1)), frame(nil), frame(pattern(127, 2)), frame(pattern(128, 3)), frame(pattern(300, 4)), frame(big)),
			max:     1 << 20,
			want:    [][]byte{pattern(1, 1), {}, pattern(127, 2), pattern(128, 3), pattern(300, 4), big},
			wantErr: io.EOF,
		},
		{
			// A later, smaller message must not see bytes of an earlier, larger one.
			name:    "larger then smaller",
			stream:  concat(frame(big), frame(pattern(5, 9))),
			max:     len(big),
			want:    [][]byte{big, pattern(5, 9)},
			wantErr: io.EOF,
		},
		{name: "exactly max", stream: frame(pattern(1000, 5)), max: 1000, want: [][]byte{pattern(1000, 5)}, wantErr: io.EOF},
		{name: "max zero, empty message", stream: frame(nil), max: 0, want: [][]byte{{}}, wantErr: io.EOF},
		{
			name:   "just over max",
			stream: concat(frame(pattern(10, 6)), frame(pattern(1001, 7))),
			max:    1000,
			want:   [][]byte{pattern(10, 6)},
			tooBig: &MessageTooLargeError{Size: 1001, Max: 1000},
		},
		{
			name:   "huge length",
			stream: protowire.AppendVarint(nil, 1<<62),
			max:    1 << 20,
			tooBig: &MessageTooLargeError{Size: 1 << 62, Max: 1 << 20},
		},
		{
			name:   "largest length",
			stream: protowire.AppendVarint(nil, math.MaxUint64),
			max:    1 << 20,
			tooBig: &MessageTooLargeError{Size: math.MaxUint64, Max: 1 << 20},
		},
		{name: "truncated body", stream: frame(pattern(100, 8))[:50], max: 1000, wantErr: io.ErrUnexpectedEOF},
		{name: "truncated big body", stream: frame(big)[:len(big)-1], max: len(big), wantErr: io.ErrUnexpectedEOF},
		{name: "truncated length", stream: []byte{0x80}, max: 1000, wantErr: io.ErrUnexpectedEOF},
		{
			name:    "truncated after a message",
			stream:  concat(frame(pattern(3, 1)), []byte{0x81, 0x80}),
			max:     1000,
			want:    [][]byte{pattern(3, 1)},
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "length overflows 64 bits",
			stream:  []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02},
			max:     1000,
			wantErr: ErrMalformed,
		},
		{
			name:    "length longer than 10 bytes",
			stream:  append(bytes.Repeat([]byte{0x80}, 10), 0x00),
			max:     1000,
			wantErr: ErrMalformed,
		},
	}
	for _, tt := range tests {
		for _, c := range chunkings {
			t.Run(tt.name+"/"+c.name, func(t *testing.T) {
				r := NewReader(c.wrap(bytes.NewReader(tt.stream)), tt.max)
				var err error
				for i := 0; ; i++ {
					var body []byte
					body, err = r.Next()
					if err != nil {
						break
					}
					if i >= len(tt.want) {
						t.Fatalf("message %d: got %d bytes, want no more messages", i, len(body))
					}
					if !bytes.Equal(body, tt.want[i]) {
						t.Fatalf("message %d: got %d bytes %.16x..., want %d bytes %.16x...", i, len(body), body, len(tt.want[i]), tt.want[i])
					}
					if cap(r.body) > tt.max {
						t.Fatalf("body buffer grew to %d, above the maximum %d", cap(r.body), tt.max)
					}
				}
				checkErr(t, err, tt.wantErr, tt.tooBig)
				if _, again := r.Next(); again != err {
					t.Errorf("second Next after %v: got %v, want the same error", err, again)
				}
			})
		}
	}
}

func checkErr(t *testing.T, err, want error, tooBig *MessageTooLargeError) {
	t.Helper()
	if tooBig != nil {
		var got *MessageTooLargeError
		if !errors.As(err, &got) || *got != *tooBig {
			t.Fatalf("got error %v, want %v", err, tooBig)
		}
		if errors.Is(err, ErrMalformed) {
			t.Errorf("%v should not be ErrMalformed", err)
		}
		return
	}
	if want == io.EOF || want == io.ErrUnexpectedEOF {
		if err != want { // the io contract: compared with ==, never wrapped
			t.Fatalf("got error %v, want %v", err, want)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

// noRead fails the test if the Reader asks the stream for more bytes.
type noRead struct{ t *testing.T }

func (r noRead) Read([]byte) (int, error) {
	r.t.Error("Reader read past the length of a message it must reject")
	return 0, io.EOF
}

func TestReaderRejectsBeforeReading(t *testing.T) {
	for _, size := range []uint64{1001, 1 << 30, 1 << 62, math.MaxUint64} {
		prefix := protowire.AppendVarint(nil, size)
		r := NewReader(io.MultiReader(bytes.NewReader(prefix), noRead{t}), 1000)
		_, err := r.Next()
		checkErr(t, err, nil, &MessageTooLargeError{Size: size, Max: 1000})
		if r.body != nil {
			t.Errorf("length %d: body buffer allocated (cap %d)", size, cap(r.body))
		}
	}

	// The same through a warmed Reader: rejecting costs the error value and nothing else.
	prefix := protowire.AppendVarint(nil, 1<<62)
	src := bytes.NewReader(prefix)
	r := NewReader(src, 1<<20)
	allocs := testing.AllocsPerRun(100, func() {
		src.Reset(prefix)
		r.src.Reset(src)
		r.err = nil
		if _, err := r.Next(); err == nil {
			t.Fatal("2^62-byte message accepted")
		}
	})
	if allocs > 1 {
		t.Errorf("rejecting a 2^62-byte length: %v allocations, want at most 1 (the error)", allocs)
	}
}

// stalled returns its bytes and then fails, standing in for a peer that announced a length and
// stopped sending.
type stalled struct{ b []byte }

var errStalled = errors.New("stalled")

func (s *stalled) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, errStalled
	}
	n := copy(p, s.b)
	s.b = s.b[n:]
	return n, nil
}

func TestReaderBodyBufferFollowsData(t *testing.T) {
	const max = 16 << 20
	stream := concat(protowire.AppendVarint(nil, max), pattern(100, 1))
	r := NewReader(&stalled{stream}, max)
	if _, err := r.Next(); !errors.Is(err, errStalled) {
		t.Fatalf("got %v, want the stream's error", err)
	}
	if cap(r.body) > firstBodyBuffer {
		t.Errorf("a length alone made the Reader allocate %d bytes, want at most %d", cap(r.body), firstBodyBuffer)
	}
}

func TestReaderStreamErrors(t *testing.T) {
	errBroken := errors.New("broken stream")
	for _, tt := range []struct {
		name   string
		stream []byte
	}{
		{"at a boundary", frame(pattern(10, 1))},
		{"inside the length", []byte{0x80}},
		{"inside the body", frame(pattern(10, 1))[:5]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(io.MultiReader(bytes.NewReader(tt.stream), iotest.ErrReader(errBroken)), 100)
			var err error
			for err == nil {
				_, err = r.Next()
			}
			if !errors.Is(err, errBroken) || errors.Is(err, ErrMalformed) {
				t.Errorf("got %v, want the stream's own error", err)
			}
		})
	}
}

func TestReaderSetMaxSize(t *testing.T) {
	stream := concat(frame(pattern(5000, 1)), frame(pattern(5000, 2)), frame(pattern(100, 3)))
	r := NewReader(bytes.NewReader(stream), 10000)
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	r.SetMaxSize(1000)
	if cap(r.body) > 1000 {
		t.Errorf("after lowering the maximum to 1000 the body buffer holds %d bytes", cap(r.body))
	}
	_, err := r.Next()
	checkErr(t, err, nil, &MessageTooLargeError{Size: 5000, Max: 1000})

	r = NewReader(bytes.NewReader(stream), 10)
	r.SetMaxSize(5000)
	if b, err := r.Next(); err != nil || len(b) != 5000 {
		t.Fatalf("after raising the maximum: %d bytes, %v", len(b), err)
	}
	r.SetMaxSize(-1)
	_, err = r.Next()
	checkErr(t, err, nil, &MessageTooLargeError{Size: 5000, Max: 0})
}

// loop repeats a stream forever, to measure a Reader in steady state.
type loop struct {
	b   []byte
	off int
}

func (l *loop) Read(p []byte) (int, error) {
	n := copy(p, l.b[l.off:])
	l.off = (l.off + n) % len(l.b)
	return n, nil
}

func TestReaderNextAllocs(t *testing.T) {
	stream := concat(frame(pattern(100, 1)), frame(pattern(100<<10, 2)), frame(nil), frame(pattern(3000, 3)))
	r := NewReader(&loop{b: stream}, 1<<20)
	for range 8 { // warm up: the body buffer reaches its steady size
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Reader.Next in steady state: %v allocations, want 0", allocs)
	}
}

func controlFrames() map[string]*pb.ControlFrame {
	return map[string]*pb.ControlFrame{
		"empty": {},
		"heartbeat": {FrameId: 7, Timestamp: 1_700_000_000_000_000_000, Payload: &pb.ControlFrame_Heartbeat{
			Heartbeat: &pb.Heartbeat{Sequence: 42, Response: true},
		}},
		"authentication request": {FrameId: 1, Payload: &pb.ControlFrame_AuthenticationRequest{
			AuthenticationRequest: &pb.AuthenticationRequest{
				Version: 1,
				Params:  &pb.TransportParameters{MaxMessageSize: 1 << 20, MaxIncomingStreams: 100, StreamReceiveWindow: 1 << 18},
			},
		}},
		"authentication response": {FrameId: 2, Payload: &pb.ControlFrame_AuthenticationResponse{
			AuthenticationResponse: &pb.AuthenticationResponse{
				SessionId: "session-é", PathId: "path-1", ErrorCode: pb.ErrorCode_AUTH_FAILED, ErrorMessage: "bad token",
			},
		}},
		"ack": {FrameId: math.MaxUint64, Payload: &pb.ControlFrame_Ack{Ack: &pb.AckFrame{
			AckId: 3, PathId: "p", Timestamp: 9,
			Ranges: []*pb.AckRange{{First: 0, Last: 10}, {First: 12, Last: 12}, {First: 14, Last: math.MaxUint64}},
		}}},
		"raw packet": {FrameId: 4, Payload: &pb.ControlFrame_RawPacketTransmission{
			RawPacketTransmission: &pb.RawPacketTransmission{Data: pattern(3000, 1), TargetPathId: "p2", SourceServerId: "p1"},
		}},
		"join request": {FrameId: 5, Payload: &pb.ControlFrame_AuthenticationRequest{
			AuthenticationRequest: &pb.AuthenticationRequest{
				Version: 1, SessionId: "0123456789abcdef0123456789abcdef", PathId: "0123456789abcdef",
				Credentials: pattern(48, 2), TargetAddress: "secondary.example:4433",
			},
		}},
		"delegate range": {FrameId: 6, Payload: &pb.ControlFrame_DelegateRange{DelegateRange: &pb.DelegateRange{
			DelegationId: 3, LogicalStreamId: 1, Offset: 1 << 20, Length: 1 << 18, PathId: "0123456789abcdef",
			Request: []byte("file=a range=1"), Expiry: 1_800_000_000_000_000_000, Auth: pattern(32, 3),
		}}},
		"delegate range with digests": {FrameId: 8, Payload: &pb.ControlFrame_DelegateRange{DelegateRange: &pb.DelegateRange{
			DelegationId: 4, LogicalStreamId: 1, Offset: 1<<20 + 1<<18, Length: 3<<16 + 5, PathId: "0123456789abcdef",
			Request: []byte("file=a range=2"), Expiry: 1_800_000_000_000_000_000, Auth: pattern(32, 4), ProgressTimeoutMs: 2500,
			Digests: pattern(4*32, 5), DigestBlockSize: 1 << 16,
		}}},
		"delegation status digest mismatch": {FrameId: 9, Payload: &pb.ControlFrame_DelegationStatus{DelegationStatus: &pb.DelegationStatus{
			DelegationId: 4, MissingOffset: 1<<20 + 1<<18 + 2<<16, Remaining: 1<<16 + 5, ErrorCode: pb.ErrorCode_DIGEST_MISMATCH,
			Reason: "the block at offset 1441792 does not match the primary's digest",
		}}},
		"delegation assign": {FrameId: 7, Payload: &pb.ControlFrame_DelegationAssign{DelegationAssign: &pb.DelegationAssign{
			DelegationId: 3, LogicalStreamId: 1, Offset: 1 << 20, Length: 1 << 18, Request: []byte("file=a range=1"),
			MaxOffset: 1 << 21, Expiry: 1_800_000_000_000_000_000, Auth: pattern(32, 3),
		}}},
		"stream reset":  {Payload: &pb.ControlFrame_StreamReset{StreamReset: &pb.StreamReset{LogicalStreamId: 5, ErrorCode: 1, FinalSize: 1 << 40}}},
		"session close": {Payload: &pb.ControlFrame_SessionClose{SessionClose: &pb.SessionClose{ErrorCode: 9, Reason: "bye"}}},
	}
}

func TestControlFrameRoundTrip(t *testing.T) {
	frames := controlFrames()
	for _, c := range chunkings {
		t.Run(c.name, func(t *testing.T) {
			var stream []byte
			var sent []*pb.ControlFrame
			for _, f := range frames {
				var err error
				if stream, err = AppendControlFrame(stream, f); err != nil {
					t.Fatal(err)
				}
				sent = append(sent, f)
			}
			r := NewReader(c.wrap(bytes.NewReader(stream)), 1<<16)
			for _, want := range sent {
				body, err := r.Next()
				if err != nil {
					t.Fatal(err)
				}
				var got pb.ControlFrame
				got.FrameId = 99 // must be reset by the parse
				if err := ParseControlFrame(body, &got); err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(&got, want) {
					t.Errorf("got %v, want %v", &got, want)
				}
			}
			if _, err := r.Next(); err != io.EOF {
				t.Errorf("after the last frame: %v, want io.EOF", err)
			}
		})
	}
}

func TestAppendControlFrame(t *testing.T) {
	prefix := []byte("keep")
	f := controlFrames()["ack"]
	b, err := AppendControlFrame(bytes.Clone(prefix), f)
	if err != nil {
		t.Fatal(err)
	}
	want, err := proto.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, concat(prefix, frame(want))) {
		t.Errorf("got %x, want %x", b, concat(prefix, frame(want)))
	}

	buf := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := AppendControlFrame(buf, f); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("AppendControlFrame into a large enough buffer: %v allocations, want 0", allocs)
	}

	bad := &pb.ControlFrame{Payload: &pb.ControlFrame_SessionClose{SessionClose: &pb.SessionClose{Reason: "\xff"}}}
	b, err = AppendControlFrame(bytes.Clone(prefix), bad)
	if err == nil {
		t.Fatal("a string that is not UTF-8 was marshalled")
	}
	if !bytes.Equal(b, prefix) {
		t.Errorf("after a failed append the buffer is %q, want %q", b, prefix)
	}
}

func TestParseControlFrameMalformed(t *testing.T) {
	// A SessionClose whose reason is not UTF-8, which proto3 forbids.
	badUTF8 := protowire.AppendTag(nil, 25, protowire.BytesType)
	badUTF8 = protowire.AppendBytes(badUTF8, protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte("\xff")))
	for name, body := range map[string][]byte{
		"truncated varint": {0x08, 0x80},
		"truncated bytes":  {0x5a, 0x05, 0x01},
		"field number 0":   {0x00, 0x00},
		"stray end group":  {0x0c},
		"invalid UTF-8":    badUTF8,
		"wrong length":     frame([]byte(strings.Repeat("x", 10)))[:5],
	} {
		t.Run(name, func(t *testing.T) {
			var f pb.ControlFrame
			if err := ParseControlFrame(body, &f); !errors.Is(err, ErrMalformed) {
				t.Errorf("got %v, want ErrMalformed", err)
			}
		})
	}
	if err := ParseControlFrame(nil, nil); err == nil {
		t.Error("parse into a nil frame succeeded")
	}
}

// chunked hands out stream in reads of the sizes the fuzzer chose, one more than each byte of
// sizes in turn, or all at once if there are none.
type chunked struct {
	stream, sizes []byte
	i             int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.stream) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(c.sizes) > 0 {
		n = min(n, int(c.sizes[c.i%len(c.sizes)])+1)
		c.i++
	}
	n = copy(p, c.stream[:min(n, len(c.stream))])
	c.stream = c.stream[n:]
	return n, nil
}

// FuzzReader feeds arbitrary streams in arbitrary reads and checks each result against a
// one-shot decoding of the whole stream with protowire.
func FuzzReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream, sizes []byte, maxSize uint32) {
		max := int(maxSize % (1 << 20))
		r := NewReader(&chunked{stream: stream, sizes: sizes}, max)
		rest := stream
		for i := 0; ; i++ {
			body, err := r.Next()
			if len(body) > max || cap(r.body) > max {
				t.Fatalf("message %d: %d bytes, buffer %d, above the maximum %d", i, len(body), cap(r.body), max)
			}
			size, n := protowire.ConsumeVarint(rest)
			switch {
			case len(rest) == 0:
				checkErr(t, err, io.EOF, nil)
			case n < 0 && protowire.ParseError(n) == io.ErrUnexpectedEOF:
				checkErr(t, err, io.ErrUnexpectedEOF, nil)
			case n < 0:
				checkErr(t, err, ErrMalformed, nil)
			case size > uint64(max):
				checkErr(t, err, nil, &MessageTooLargeError{Size: size, Max: uint64(max)})
			case size > uint64(len(rest)-n):
				checkErr(t, err, io.ErrUnexpectedEOF, nil)
			default:
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if want := rest[n : n+int(size)]; !bytes.Equal(body, want) {
					t.Fatalf("message %d: got %x, want %x", i, body, want)
				}
				rest = rest[n+int(size):]
				continue
			}
			return
		}
	})
}

// FuzzControlFrame checks that whatever ParseControlFrame accepts survives AppendControlFrame,
// the Reader and ParseControlFrame again unchanged.
func FuzzControlFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var cf pb.ControlFrame
		if err := ParseControlFrame(b, &cf); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		msg, err := AppendControlFrame(nil, &cf)
		if err != nil {
			t.Fatalf("re-marshalling a frame we parsed: %v", err)
		}
		r := NewReader(bytes.NewReader(msg), len(msg))
		body, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		var again pb.ControlFrame
		if err := ParseControlFrame(body, &again); err != nil {
			t.Fatalf("parsing our own encoding: %v", err)
		}
		if !proto.Equal(&cf, &again) {
			t.Fatalf("parsed %v, after a round trip %v", &cf, &again)
		}
	})
}

func readerSeeds() map[string][]any {
	messages := concat(frame(pattern(1, 1)), frame(nil), frame(pattern(200, 2)), frame(pattern(5, 3)))
	var controls []byte
	for _, name := range []string{"heartbeat", "ack", "session close"} {
		controls, _ = AppendControlFrame(controls, controlFrames()[name])
	}
	return map[string][]any{
		"messages coalesced":   {messages, []byte(nil), uint32(1000)},
		"messages byte a time": {messages, []byte{0}, uint32(1000)},
		"messages uneven":      {messages, []byte{2, 0, 130, 6}, uint32(1000)},
		"control frames":       {controls, []byte{3, 7, 0}, uint32(1 << 16)},
		"data packets":         {AppendDataPacketMessage(AppendDataPacketMessage(nil, dataPackets()["one frame"]), dataPackets()["fin only"]), []byte{4}, uint32(100)},
		"exactly max":          {frame(pattern(100, 4)), []byte(nil), uint32(100)},
		"just over max":        {frame(pattern(101, 4)), []byte(nil), uint32(100)},
		"huge length":          {protowire.AppendVarint(nil, 1<<62), []byte(nil), uint32(1 << 20)},
		"length overflow":      {[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, []byte(nil), uint32(1 << 20)},
		"truncated body":       {frame(pattern(100, 5))[:60], []byte{9}, uint32(1000)},
		"truncated length":     {concat(frame(pattern(3, 6)), []byte{0x80}), []byte(nil), uint32(1000)},
	}
}

func controlFrameSeeds() map[string][]any {
	seeds := map[string][]any{}
	for name, f := range controlFrames() {
		if name == "raw packet" {
			continue // the fuzzer learns nothing more from a long payload
		}
		b, err := proto.Marshal(f)
		if err != nil {
			panic(err)
		}
		seeds[name] = []any{b}
	}
	var none field
	hb, _ := proto.Marshal(controlFrames()["heartbeat"])
	seeds["unknown fields"] = []any{[]byte(append(none.varint(100, 1).bytes(26, []byte("future frame")), hb...))}
	seeds["two payloads"] = []any{[]byte(none.bytes(19, none.varint(1, 1)).bytes(25, none.bytes(2, []byte("bye"))).bytes(19, none.varint(2, 1)))}
	seeds["invalid UTF-8"] = []any{[]byte(none.bytes(25, none.bytes(2, []byte("\xff"))))}
	return seeds
}

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed corpora in testdata/fuzz")

// TestFuzzSeeds keeps testdata/fuzz in step with the seed lists above: run
// go test -run TestFuzzSeeds -update-seeds ./internal/wire after changing them.
func TestFuzzSeeds(t *testing.T) {
	for target, seeds := range map[string]map[string][]any{
		"FuzzReader":          readerSeeds(),
		"FuzzParseDataPacket": parseDataPacketSeeds(),
		"FuzzControlFrame":    controlFrameSeeds(),
	} {
		dir := filepath.Join("testdata", "fuzz", target)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, vals := range seeds {
			path := filepath.Join(dir, "seed-"+strings.ReplaceAll(name, " ", "-"))
			want := marshalSeed(vals...)
			if *updateSeeds {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s is missing or stale (%v): run go test -run TestFuzzSeeds -update-seeds", path, err)
			}
		}
	}
}

// marshalSeed writes a corpus entry in the format of go test -fuzz.
func marshalSeed(vals ...any) []byte {
	b := []byte("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
			b = fmt.Appendf(b, "[]byte(%q)\n", v)
		case uint32:
			b = fmt.Appendf(b, "uint32(%d)\n", v)
		default:
			panic(fmt.Sprintf("seed of type %T", v))
		}
	}
	return b
}
