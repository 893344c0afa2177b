package wire

import (
	"encoding/binary"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of data.proto. The codec below must agree with pb.DataPacket byte for byte; the
// tests and FuzzParseDataPacket compare the two.
const (
	packetIDField   = 1 // DataPacket.packet_id, uint64
	framesField     = 3 // DataPacket.frames, repeated DataFrame
	compressedField = 5 // DataPacket.compressed, bytes

	streamIDField = 2 // DataFrame.logical_stream_id, uint64
	offsetField   = 3 // DataFrame.offset, uint64
	dataField     = 4 // DataFrame.data, bytes
	finField      = 5 // DataFrame.fin, bool
)

// Every field number above is below 16, so each tag is one byte.
const tagSize = 1

// DataFrame carries bytes of one logical stream at a KWIK offset. After ParseDataPacket, Data
// aliases the parsed buffer.
type DataFrame struct {
	StreamID, Offset uint64 // the logical stream, and Data's offset in it
	Data             []byte // the bytes
	Fin              bool   // Offset+len(Data) is the stream's final size
}

// DataPacket is the unit of the data plane: the packet id is what the peer acknowledges.
type DataPacket struct {
	PacketID   uint64      // per path and direction, from 0
	Frames     []DataFrame // one or more, unless Compressed holds them
	Compressed []byte      // a zstd frame whose content is a DataPacket body of frames only
}

var (
	errTruncated     = fmt.Errorf("%w: data packet truncated or bad varint", ErrMalformed)
	errFieldNumber   = fmt.Errorf("%w: data packet has an invalid field number", ErrMalformed)
	errStrayEndGroup = fmt.Errorf("%w: data packet has an unmatched end-group tag", ErrMalformed)
	errUnknownField  = fmt.Errorf("%w: data packet has an undecodable unknown field", ErrMalformed)
)

func dataFrameSize(f *DataFrame) int {
	n := 0
	if f.StreamID != 0 {
		n += tagSize + protowire.SizeVarint(f.StreamID)
	}
	if f.Offset != 0 {
		n += tagSize + protowire.SizeVarint(f.Offset)
	}
	if len(f.Data) > 0 {
		n += tagSize + protowire.SizeBytes(len(f.Data))
	}
	if f.Fin {
		n += tagSize + 1
	}
	return n
}

// PacketFrameSize returns what f adds to a DataPacket's body: DataPacketSize is the packet ID's
// field plus the sum of its frames' PacketFrameSize.
func PacketFrameSize(f *DataFrame) int {
	return tagSize + protowire.SizeBytes(dataFrameSize(f))
}

// DataPacketSize returns the size of p's body, the length prefix excluded.
func DataPacketSize(p *DataPacket) int {
	n := 0
	if p.PacketID != 0 {
		n += tagSize + protowire.SizeVarint(p.PacketID)
	}
	for i := range p.Frames {
		n += tagSize + protowire.SizeBytes(dataFrameSize(&p.Frames[i]))
	}
	if len(p.Compressed) > 0 {
		n += tagSize + protowire.SizeBytes(len(p.Compressed))
	}
	return n
}

// AppendDataPacket appends p's body to b, in the bytes proto.Marshal would write for the
// equivalent pb.DataPacket: fields in number order, zero values omitted as proto3 does. b grows
// at most once.
func AppendDataPacket(b []byte, p *DataPacket) []byte {
	b = slices.Grow(b, DataPacketSize(p))
	return appendDataPacket(b, p)
}

// AppendDataPacketMessage appends p as a message of a data stream: its length as a varint, then
// its body. b grows at most once.
func AppendDataPacketMessage(b []byte, p *DataPacket) []byte {
	n := DataPacketSize(p)
	b = slices.Grow(b, protowire.SizeVarint(uint64(n))+n)
	b = protowire.AppendVarint(b, uint64(n))
	return appendDataPacket(b, p)
}

func appendDataPacket(b []byte, p *DataPacket) []byte {
	if p.PacketID != 0 {
		b = protowire.AppendTag(b, packetIDField, protowire.VarintType)
		b = protowire.AppendVarint(b, p.PacketID)
	}
	for i := range p.Frames {
		f := &p.Frames[i]
		b = protowire.AppendTag(b, framesField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(dataFrameSize(f)))
		if f.StreamID != 0 {
			b = protowire.AppendTag(b, streamIDField, protowire.VarintType)
			b = protowire.AppendVarint(b, f.StreamID)
		}
		if f.Offset != 0 {
			b = protowire.AppendTag(b, offsetField, protowire.VarintType)
			b = protowire.AppendVarint(b, f.Offset)
		}
		if len(f.Data) > 0 {
			b = protowire.AppendTag(b, dataField, protowire.BytesType)
			b = protowire.AppendBytes(b, f.Data)
		}
		if f.Fin {
			b = protowire.AppendTag(b, finField, protowire.VarintType)
			b = protowire.AppendVarint(b, protowire.EncodeBool(true))
		}
	}
	if len(p.Compressed) > 0 {
		b = protowire.AppendTag(b, compressedField, protowire.BytesType)
		b = protowire.AppendBytes(b, p.Compressed)
	}
	return b
}

// AppendDataPacketHeader appends the message of a one-frame DataPacket without fin up to, not
// including, the frame's data: the header followed by exactly dataLen data bytes is the message
// AppendDataPacketMessage writes for that packet. It lets a sender hand large data to QUIC from
// the caller's buffer instead of copying it behind the header. dataLen must be positive.
func AppendDataPacketHeader(b []byte, packetID, streamID, offset uint64, dataLen int) []byte {
	f := DataFrame{StreamID: streamID, Offset: offset}
	frameSize := dataFrameSize(&f) + tagSize + protowire.SizeBytes(dataLen)
	n := tagSize + protowire.SizeBytes(frameSize)
	if packetID != 0 {
		n += tagSize + protowire.SizeVarint(packetID)
	}
	b = protowire.AppendVarint(b, uint64(n))
	if packetID != 0 {
		b = protowire.AppendTag(b, packetIDField, protowire.VarintType)
		b = protowire.AppendVarint(b, packetID)
	}
	b = protowire.AppendTag(b, framesField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(frameSize))
	if streamID != 0 {
		b = protowire.AppendTag(b, streamIDField, protowire.VarintType)
		b = protowire.AppendVarint(b, streamID)
	}
	if offset != 0 {
		b = protowire.AppendTag(b, offsetField, protowire.VarintType)
		b = protowire.AppendVarint(b, offset)
	}
	b = protowire.AppendTag(b, dataField, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(dataLen))
}

// MaxFrameData returns the largest len(Data) of a single-frame DataPacket whose body stays <=
// maxMessageSize, whatever the packet id, stream id, offset and fin (worst-case varints). It
// returns 0 if no frame with data fits.
func MaxFrameData(maxMessageSize int) int {
	if maxMessageSize <= 0 {
		return 0
	}
	m := uint64(maxMessageSize)
	// The overhead, worstDataPacketSize(d)-d, grows with d only through two length varints, so
	// from m minus the least overhead the answer is at most a couple of dozen steps down.
	overhead := worstDataPacketSize(1) - 1
	if m <= overhead {
		return 0
	}
	for d := m - overhead; d > 0; d-- {
		if worstDataPacketSize(d) <= m {
			return int(d) // d < m, which came from an int
		}
	}
	return 0
}

// worstDataPacketSize is the body size of a one-frame DataPacket with d > 0 bytes of data and
// every other field present at its longest. It computes in uint64 so that a size near
// math.MaxInt cannot overflow.
func worstDataPacketSize(d uint64) uint64 {
	const longestUint = tagSize + binary.MaxVarintLen64
	const fin = tagSize + 1
	frame := 2*longestUint + tagSize + uint64(protowire.SizeVarint(d)) + d + fin
	return longestUint + tagSize + uint64(protowire.SizeVarint(frame)) + frame
}

// ParseDataPacket parses a body into p, reusing p.Frames' backing array (p.Frames = p.Frames[:0]
// first); frames' Data alias b. It accepts exactly what proto.Unmarshal into a pb.DataPacket
// accepts, with the same result: unknown fields, and known fields with an unexpected wire type,
// are skipped as unknown, the last occurrence of a scalar field wins, and each occurrence of the
// frames field is one more frame. Truncations, bad varints and bad tags return an error wrapping
// ErrMalformed, after which p's content is unspecified. It does not allocate once p.Frames has
// room for the packet's frames.
func ParseDataPacket(b []byte, p *DataPacket) error {
	p.PacketID = 0
	p.Frames = p.Frames[:0]
	p.Compressed = nil
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch {
		case num == packetIDField && typ == protowire.VarintType:
			p.PacketID, n = protowire.ConsumeVarint(b)
		case num == compressedField && typ == protowire.BytesType:
			p.Compressed, n = protowire.ConsumeBytes(b)
		case num == framesField && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				p.Frames = append(p.Frames, DataFrame{})
				if err := parseDataFrame(v, &p.Frames[len(p.Frames)-1]); err != nil {
					return err
				}
			}
		default:
			if n, err = skipField(num, typ, b); err != nil {
				return err
			}
		}
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
	}
	return nil
}

func parseDataFrame(b []byte, f *DataFrame) error {
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch {
		case num == streamIDField && typ == protowire.VarintType:
			f.StreamID, n = protowire.ConsumeVarint(b)
		case num == offsetField && typ == protowire.VarintType:
			f.Offset, n = protowire.ConsumeVarint(b)
		case num == dataField && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			// The full slice expression keeps an append to Data from overwriting the rest of the
			// packet.
			f.Data = v[:len(v):len(v)]
		case num == finField && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			f.Fin = protowire.DecodeBool(v)
		default:
			if n, err = skipField(num, typ, b); err != nil {
				return err
			}
		}
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
	}
	return nil
}

// consumeTag reads a tag with the checks of the generated decoder, which are stricter than
// protowire.ConsumeTag's: field numbers above protowire.MaxValidNumber are an error, and so is
// an end-group tag, since a message parsed here never sits inside a group.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int, error) {
	tag, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return 0, 0, 0, errTruncated
	}
	num := tag >> 3
	if num < uint64(protowire.MinValidNumber) || num > uint64(protowire.MaxValidNumber) {
		return 0, 0, 0, errFieldNumber
	}
	typ := protowire.Type(tag & 7)
	if typ == protowire.EndGroupType {
		return 0, 0, 0, errStrayEndGroup
	}
	return protowire.Number(num), typ, n, nil
}

// skipField skips a field this codec does not decode, the way the generated decoder keeps it as
// an unknown field.
func skipField(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
	n := protowire.ConsumeFieldValue(num, typ, b)
	if n < 0 {
		return 0, errUnknownField
	}
	return n, nil
}
