package kwik

import (
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/kwik-go/kwik/internal/wire"
)

// Compression (Config.Compression): a sender whose peer accepts it compresses a DataPacket's
// frames with zstd, at its fastest level, when the packet is large enough for it to pay, and
// sends them in DataPacket.compressed; the packet ID stays outside, for acknowledgements. A
// packet that does not shrink by an eighth goes as it is, and the sender then skips the next
// few packets of that real stream before trying again, so incompressible data costs little.
// One encoder and one decoder serve the whole process: zstd's EncodeAll and DecodeAll are
// safe for concurrent use.

// compressZstd is TransportParameters.compression's bit for zstd.
const compressZstd = 1

func compressionFlags(on bool) uint32 {
	if on {
		return compressZstd
	}
	return 0
}

const (
	// compressMin is the smallest packet body worth compressing.
	compressMin = 512
	// compressSkip is how many packets a real stream sends as they are after one that did
	// not shrink.
	compressSkip = 16
)

var (
	zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithWindowSize(1<<20))
		if err != nil {
			panic(err) // only for invalid options
		}
		return e
	})
	zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
		// DecodeAll never decodes past cap(dst): decompress sizes dst by the receiver's own
		// limit, so nothing a peer sends makes it allocate more.
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxMessageSize),
			zstd.WithDecoderMaxWindow(maxMessageSize), zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			panic(err) // only for invalid options
		}
		return d
	})
)

// compressor is a real stream's compression state. Owned by the holder of realStream.mu.
type compressor struct {
	skip  int    // packets to send as they are before trying again
	plain []byte // the frames' body, to compress
	out   []byte // the compressed frame
}

// compress returns frames as a zstd frame, or nil when it is not worth it.
func (c *compressor) compress(frames []wire.DataFrame) []byte {
	if c.skip > 0 {
		c.skip--
		return nil
	}
	c.plain = wire.AppendDataPacket(c.plain[:0], &wire.DataPacket{Frames: frames})
	if len(c.plain) < compressMin {
		return nil
	}
	c.out = zstdEncoder().EncodeAll(c.plain, c.out[:0])
	if len(c.out) > len(c.plain)-len(c.plain)/8 {
		c.skip = compressSkip
		return nil
	}
	return c.out
}

// decompress returns the frames of a compressed packet, decoded into buf (which it may grow),
// or a KWIK_INVALID_FRAME error. The result holds at most limit bytes, the receiver's own
// message limit: the frame must state its content size, at most limit (and a window no larger),
// before anything is allocated, and the decoder writes no more than that size (its cap limit),
// whatever the frame's blocks decode to.
func decompress(z []byte, buf []byte, limit int, into *wire.DataPacket) ([]byte, error) {
	var h zstd.Header
	if err := h.Decode(z); err != nil || !h.HasFCS || h.FrameContentSize > uint64(limit) ||
		h.WindowSize > uint64(max(limit, zstd.MinWindowSize)) || h.HeaderSize <= 0 {
		return buf, &Error{Code: CodeInvalidFrame, Message: "compressed data packet: bad or oversized zstd frame, or one without its content size"}
	}
	size := int(h.FrameContentSize)
	if cap(buf) < size {
		buf = make([]byte, 0, size)
	}
	out, err := zstdDecoder().DecodeAll(z, buf[:0:size])
	if err != nil || len(out) != size {
		return buf, &Error{Code: CodeInvalidFrame, Message: "compressed data packet does not decode to its stated size"}
	}
	if err := wire.ParseDataPacket(out, into); err != nil || into.PacketID != 0 || len(into.Compressed) != 0 {
		return buf, &Error{Code: CodeInvalidFrame, Message: "compressed data packet holds more than frames"}
	}
	return buf, nil
}
