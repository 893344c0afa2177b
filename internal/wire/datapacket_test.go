package wire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/kwik-go/kwik/internal/wire/pb"
)

func toPB(p *DataPacket) *pb.DataPacket {
	m := &pb.DataPacket{PacketId: p.PacketID, Compressed: p.Compressed}
	for _, f := range p.Frames {
		m.Frames = append(m.Frames, &pb.DataFrame{LogicalStreamId: f.StreamID, Offset: f.Offset, Data: f.Data, Fin: f.Fin})
	}
	return m
}

func fromPB(m *pb.DataPacket) *DataPacket {
	p := &DataPacket{PacketID: m.GetPacketId(), Compressed: m.GetCompressed()}
	for _, f := range m.GetFrames() {
		p.Frames = append(p.Frames, DataFrame{StreamID: f.LogicalStreamId, Offset: f.Offset, Data: f.Data, Fin: f.Fin})
	}
	return p
}

// equalPackets treats nil and empty Data alike, as proto3 does.
func equalPackets(a, b *DataPacket) bool {
	if a.PacketID != b.PacketID || len(a.Frames) != len(b.Frames) || !bytes.Equal(a.Compressed, b.Compressed) {
		return false
	}
	for i := range a.Frames {
		fa, fb := &a.Frames[i], &b.Frames[i]
		if fa.StreamID != fb.StreamID || fa.Offset != fb.Offset || fa.Fin != fb.Fin || !bytes.Equal(fa.Data, fb.Data) {
			return false
		}
	}
	return true
}

func describe(p *DataPacket) string {
	s := fmt.Sprintf("packet %d:", p.PacketID)
	for _, f := range p.Frames {
		s += fmt.Sprintf(" {stream %d offset %d data %d bytes %.8x fin %v}", f.StreamID, f.Offset, len(f.Data), f.Data, f.Fin)
	}
	return s
}

func dataPackets() map[string]*DataPacket {
	return map[string]*DataPacket{
		"empty":          {},
		"packet id only": {PacketID: 300},
		"one frame":      {PacketID: 1, Frames: []DataFrame{{StreamID: 4, Offset: 1000, Data: []byte("hello"), Fin: false}}},
		"fin only":       {PacketID: 2, Frames: []DataFrame{{StreamID: 4, Offset: 1005, Fin: true}}},
		"zero frame":     {Frames: []DataFrame{{}}},
		"empty data":     {PacketID: 3, Frames: []DataFrame{{StreamID: 8, Offset: 0, Data: []byte{}}}},
		"multiple frames": {PacketID: 1 << 40, Frames: []DataFrame{
			{StreamID: 1, Offset: 0, Data: pattern(100, 1)},
			{StreamID: 2, Offset: 1 << 20, Data: pattern(200, 2), Fin: true},
			{},
			{StreamID: 1, Offset: 100, Fin: true},
		}},
		"largest varints": {PacketID: math.MaxUint64, Frames: []DataFrame{
			{StreamID: math.MaxUint64, Offset: math.MaxUint64, Data: pattern(1, 1), Fin: true},
		}},
		"compressed": {PacketID: 12, Compressed: []byte{0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3}},
		"32 KiB":     {PacketID: 77, Frames: []DataFrame{{StreamID: 5, Offset: 1 << 30, Data: pattern(32<<10, 5)}}},
	}
}

func TestAppendDataPacket(t *testing.T) {
	for name, p := range dataPackets() {
		t.Run(name, func(t *testing.T) {
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(toPB(p))
			if err != nil {
				t.Fatal(err)
			}
			body := AppendDataPacket(nil, p)
			if !bytes.Equal(body, want) {
				t.Errorf("AppendDataPacket wrote\n%x\nproto.Marshal writes\n%x", body, want)
			}
			if n := DataPacketSize(p); n != len(body) {
				t.Errorf("DataPacketSize = %d, body is %d bytes", n, len(body))
			}

			var m pb.DataPacket
			if err := proto.Unmarshal(body, &m); err != nil {
				t.Fatalf("generated decoder rejects our bytes: %v", err)
			}
			if got := fromPB(&m); !equalPackets(got, p) {
				t.Errorf("generated decoder read %s, want %s", describe(got), describe(p))
			}

			prefix := []byte{0xaa, 0xbb}
			msg := AppendDataPacketMessage(bytes.Clone(prefix), p)
			if want := concat(prefix, frame(body)); !bytes.Equal(msg, want) {
				t.Errorf("AppendDataPacketMessage wrote %x, want %x", msg, want)
			}
		})
	}
}

func TestParseDataPacket(t *testing.T) {
	for name, p := range dataPackets() {
		t.Run(name, func(t *testing.T) {
			b, err := proto.Marshal(toPB(p))
			if err != nil {
				t.Fatal(err)
			}
			// Stale content that the parse must clear.
			got := DataPacket{PacketID: 9, Frames: []DataFrame{{StreamID: 1, Offset: 2, Data: []byte("old"), Fin: true}}}
			if err := ParseDataPacket(b, &got); err != nil {
				t.Fatal(err)
			}
			if !equalPackets(&got, p) {
				t.Errorf("got %s, want %s", describe(&got), describe(p))
			}
		})
	}
}

// field builds wire bytes for hand-made encodings that proto.Marshal would never write.
type field []byte

func (f field) varint(num protowire.Number, v uint64) field {
	return protowire.AppendVarint(protowire.AppendTag(f, num, protowire.VarintType), v)
}

func (f field) bytes(num protowire.Number, v []byte) field {
	return protowire.AppendBytes(protowire.AppendTag(f, num, protowire.BytesType), v)
}

func (f field) fixed32(num protowire.Number, v uint32) field {
	return protowire.AppendFixed32(protowire.AppendTag(f, num, protowire.Fixed32Type), v)
}

func (f field) fixed64(num protowire.Number, v uint64) field {
	return protowire.AppendFixed64(protowire.AppendTag(f, num, protowire.Fixed64Type), v)
}

func (f field) group(num protowire.Number, inner []byte) field {
	f = append(protowire.AppendTag(f, num, protowire.StartGroupType), inner...)
	return protowire.AppendTag(f, num, protowire.EndGroupType)
}

func (f field) raw(b ...byte) field { return append(f, b...) }

type encodingCase struct {
	name string
	b    []byte
	want *DataPacket
}

// encodingCases are encodings that only another implementation, or a newer KWIK, would write.
// Each must parse as the generated decoder parses it.
func encodingCases() []encodingCase {
	var none field
	return []encodingCase{
		{
			name: "unknown fields of every wire type",
			b: none.fixed32(9, 1).varint(1, 5).fixed64(10, 2).group(11, none.varint(1, 1).group(2, nil)).bytes(12, []byte("x")).
				bytes(3, none.varint(2, 7).fixed64(20, 3).bytes(4, []byte("d")).group(21, none.bytes(1, nil)).varint(5, 1).fixed32(22, 4)).
				varint(1000, 1).varint(protowire.MaxValidNumber, 1),
			want: &DataPacket{PacketID: 5, Frames: []DataFrame{{StreamID: 7, Data: []byte("d"), Fin: true}}},
		},
		{
			name: "reserved fields of the seed",
			b:    none.bytes(2, []byte("path")).bytes(4, []byte("sum")).bytes(3, none.varint(1, 1).varint(6, 2).bytes(7, []byte("p")).varint(3, 9)),
			want: &DataPacket{Frames: []DataFrame{{Offset: 9}}},
		},
		{
			name: "known fields with another wire type are unknown fields",
			b: none.bytes(1, []byte{0x05}).varint(1, 6).fixed64(1, 7).varint(3, 1).fixed32(3, 1).group(3, nil).
				bytes(3, none.bytes(2, []byte{1}).fixed64(3, 8).varint(4, 1).bytes(5, []byte{1}).varint(2, 3)),
			want: &DataPacket{PacketID: 6, Frames: []DataFrame{{StreamID: 3}}},
		},
		{
			name: "last scalar wins",
			b: none.varint(1, 1).bytes(3, none.varint(2, 1).varint(2, 2).varint(3, 5).varint(3, 0).bytes(4, []byte("a")).bytes(4, []byte("bc")).varint(5, 1).varint(5, 0)).
				varint(1, 2),
			want: &DataPacket{PacketID: 2, Frames: []DataFrame{{StreamID: 2, Data: []byte("bc")}}},
		},
		{
			name: "explicit zero values",
			b:    none.varint(1, 0).bytes(3, none.varint(2, 0).varint(3, 0).bytes(4, nil).varint(5, 0)),
			want: &DataPacket{Frames: []DataFrame{{}}},
		},
		{
			name: "later data empties earlier",
			b:    none.bytes(3, none.bytes(4, []byte("abc")).bytes(4, nil)),
			want: &DataPacket{Frames: []DataFrame{{}}},
		},
		{
			name: "fin as a varint above 1",
			b:    none.bytes(3, none.varint(5, 2)).bytes(3, none.varint(5, math.MaxUint64)).bytes(3, none.varint(5, 1<<32)),
			want: &DataPacket{Frames: []DataFrame{{Fin: true}, {Fin: true}, {Fin: true}}},
		},
		{
			name: "non-minimal varints",
			b:    none.raw(0x88, 0x00, 0x85, 0x80, 0x80, 0x00).raw(0x1a, 0x84, 0x00).raw(0x10, 0x81, 0x80, 0x00),
			want: &DataPacket{PacketID: 5, Frames: []DataFrame{{StreamID: 1}}},
		},
		{
			name: "ten-byte varint at the limit",
			b:    none.raw(0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
			want: &DataPacket{PacketID: math.MaxUint64},
		},
		{
			name: "frames interleaved with packet id",
			b:    none.bytes(3, none.varint(2, 1)).varint(1, 4).bytes(3, none.varint(2, 2)),
			want: &DataPacket{PacketID: 4, Frames: []DataFrame{{StreamID: 1}, {StreamID: 2}}},
		},
	}
}

func TestParseDataPacketEncodings(t *testing.T) {
	for _, tt := range encodingCases() {
		t.Run(tt.name, func(t *testing.T) {
			var m pb.DataPacket
			if err := proto.Unmarshal(tt.b, &m); err != nil {
				t.Fatalf("the generated decoder rejects the case: %v", err)
			}
			if gen := fromPB(&m); !equalPackets(gen, tt.want) {
				t.Fatalf("the generated decoder reads %s, the case expects %s", describe(gen), describe(tt.want))
			}
			var p DataPacket
			if err := ParseDataPacket(tt.b, &p); err != nil {
				t.Fatal(err)
			}
			if !equalPackets(&p, tt.want) {
				t.Errorf("got %s, want %s", describe(&p), describe(tt.want))
			}
		})
	}
}

type malformedCase struct {
	name string
	b    []byte
}

// malformedCases are bytes that both decoders must reject.
func malformedCases() []malformedCase {
	var none field
	valid := none.varint(1, 1).bytes(3, none.varint(2, 1).bytes(4, []byte("data")).varint(5, 1))
	return []malformedCase{
		{"truncated", valid[:len(valid)-1]},
		{"truncated tag", none.raw(0x80)},
		{"truncated packet id", none.raw(0x08)},
		{"truncated frame length", none.raw(0x1a, 0x80)},
		{"frame longer than the packet", none.raw(0x1a, 0x05, 0x10, 0x01)},
		{"data longer than the frame", none.bytes(3, none.raw(0x22, 0x03, 'a'))},
		{"truncated fin", none.bytes(3, none.raw(0x28))},
		{"varint over 64 bits", none.raw(0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02)},
		{"varint of 11 bytes", none.raw(0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00)},
		{"field number 0", none.raw(0x00, 0x01)},
		{"field number 0 in a frame", none.bytes(3, none.raw(0x00, 0x01))},
		{"field number above the maximum", none.varint(protowire.MaxValidNumber+1, 1)},
		{"field number above the maximum in a frame", none.bytes(3, none.bytes(protowire.MaxValidNumber+1, nil))},
		{"field number above 32 bits", protowire.AppendVarint(protowire.AppendVarint(nil, 1<<40), 1)},
		{"stray end group", none.raw(0x0c)},
		{"stray end group in a frame", none.bytes(3, none.raw(0x14))},
		{"unterminated group", none.raw(0x5b, 0x08, 0x01)},
		{"mismatched end group", none.raw(0x5b, 0x64)},
		{"wire type 6", none.raw(0x0e, 0x00)},
		{"wire type 7 in a frame", none.bytes(3, none.raw(0x17))},
		{"truncated fixed64", none.raw(0x09, 0x01, 0x02)},
		{"truncated fixed32 in a frame", none.bytes(3, none.raw(0x35, 0x01))},
		{"truncated unknown bytes", none.raw(0x62, 0x02, 0x01)},
	}
}

func TestParseDataPacketMalformed(t *testing.T) {
	for _, tt := range malformedCases() {
		t.Run(tt.name, func(t *testing.T) {
			var m pb.DataPacket
			if err := proto.Unmarshal(tt.b, &m); err == nil {
				t.Fatalf("the generated decoder accepts the case %x", tt.b)
			}
			var p DataPacket
			if err := ParseDataPacket(tt.b, &p); !errors.Is(err, ErrMalformed) {
				t.Errorf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func TestParseDataPacketReuse(t *testing.T) {
	long := AppendDataPacket(nil, dataPackets()["multiple frames"])
	short := AppendDataPacket(nil, &DataPacket{PacketID: 1, Frames: []DataFrame{{StreamID: 3, Data: []byte("x")}}})
	var p DataPacket
	if err := ParseDataPacket(long, &p); err != nil {
		t.Fatal(err)
	}
	backing := &p.Frames[:1][0]
	if err := ParseDataPacket(short, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Frames) != 1 || &p.Frames[0] != backing {
		t.Fatalf("frames not reused: %d frames", len(p.Frames))
	}
	if f := p.Frames[0]; f.StreamID != 3 || f.Offset != 0 || f.Fin || string(f.Data) != "x" {
		t.Errorf("stale fields survived: %s", describe(&p))
	}

	// Data aliases the buffer, but appending to it must not overwrite what follows.
	b := AppendDataPacket(nil, &DataPacket{Frames: []DataFrame{{Data: []byte("ab")}, {Data: []byte("cd")}}})
	if err := ParseDataPacket(b, &p); err != nil {
		t.Fatal(err)
	}
	_ = append(p.Frames[0].Data, 'X', 'X', 'X', 'X')
	if string(p.Frames[1].Data) != "cd" {
		t.Errorf("an append to one frame's Data overwrote the next frame: %q", p.Frames[1].Data)
	}
}

// worstCase is a one-frame packet with every varint at its longest.
func worstCase(n int) *DataPacket {
	return &DataPacket{PacketID: math.MaxUint64, Frames: []DataFrame{
		{StreamID: math.MaxUint64, Offset: math.MaxUint64, Data: make([]byte, n), Fin: true},
	}}
}

func TestMaxFrameData(t *testing.T) {
	sizes := []int{-1, 0, 1, 38, 39, 40, 41, 100, 1200, 1 << 14, 1 << 16, 1 << 20, 1 << 22}
	// Around the sizes where the data length or the frame length needs one more varint byte.
	for _, edge := range []int{1 << 7, 1 << 14, 1 << 21} {
		for d := -3; d <= 60; d++ {
			sizes = append(sizes, edge+d)
		}
	}
	for _, m := range sizes {
		t.Run(fmt.Sprint(m), func(t *testing.T) {
			d := MaxFrameData(m)
			if d < 0 {
				t.Fatalf("MaxFrameData(%d) = %d", m, d)
			}
			if d > 0 {
				if size := DataPacketSize(worstCase(d)); size > m {
					t.Fatalf("MaxFrameData(%d) = %d, but such a packet takes %d bytes", m, d, size)
				}
				if m-d > 60 {
					t.Errorf("MaxFrameData(%d) = %d leaves %d bytes of overhead", m, d, m-d)
				}
			}
			if size := DataPacketSize(worstCase(d + 1)); size <= m {
				t.Errorf("MaxFrameData(%d) = %d, but %d bytes of data fit (%d bytes)", m, d, d+1, size)
			}
		})
	}
	if d := MaxFrameData(math.MaxInt); d <= 0 || d > math.MaxInt-39 {
		t.Errorf("MaxFrameData(MaxInt) = %d", d)
	}
}

func TestDataPacketAllocs(t *testing.T) {
	p := dataPackets()["multiple frames"]
	buf := make([]byte, 0, 2*DataPacketSize(p))
	allocs := testing.AllocsPerRun(1000, func() {
		buf = AppendDataPacketMessage(buf[:0], p)
	})
	if allocs != 0 {
		t.Errorf("AppendDataPacketMessage into a large enough buffer: %v allocations, want 0", allocs)
	}

	body := AppendDataPacket(nil, p)
	var got DataPacket
	if err := ParseDataPacket(body, &got); err != nil {
		t.Fatal(err)
	}
	allocs = testing.AllocsPerRun(1000, func() {
		if err := ParseDataPacket(body, &got); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("ParseDataPacket into a warmed packet: %v allocations, want 0", allocs)
	}
}

// The generated code is measured in the same run, as the baseline the hand-written codec must beat.
func BenchmarkAppendDataPacket(b *testing.B) {
	p := dataPackets()["32 KiB"]
	b.Run("protowire", func(b *testing.B) {
		buf := make([]byte, 0, 64<<10)
		b.ReportAllocs()
		b.SetBytes(int64(len(p.Frames[0].Data)))
		for b.Loop() {
			buf = AppendDataPacketMessage(buf[:0], p)
		}
	})
	b.Run("generated", func(b *testing.B) {
		m := toPB(p)
		buf := make([]byte, 0, 64<<10)
		b.ReportAllocs()
		b.SetBytes(int64(len(p.Frames[0].Data)))
		for b.Loop() {
			var err error
			if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf[:0], m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkParseDataPacket(b *testing.B) {
	p := dataPackets()["32 KiB"]
	body := AppendDataPacket(nil, p)
	b.Run("protowire", func(b *testing.B) {
		var got DataPacket
		b.ReportAllocs()
		b.SetBytes(int64(len(p.Frames[0].Data)))
		for b.Loop() {
			if err := ParseDataPacket(body, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("generated", func(b *testing.B) {
		var m pb.DataPacket
		b.ReportAllocs()
		b.SetBytes(int64(len(p.Frames[0].Data)))
		for b.Loop() {
			if err := proto.Unmarshal(body, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkReaderNext(b *testing.B) {
	msg := AppendDataPacketMessage(nil, dataPackets()["32 KiB"])
	r := NewReader(&loop{b: msg}, 1<<20)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzParseDataPacket checks ParseDataPacket against the generated decoder: both accept the same
// inputs with the same content, and what ParseDataPacket read re-encodes to what proto.Marshal
// writes and parses back to itself.
func FuzzParseDataPacket(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var p DataPacket
		err := ParseDataPacket(b, &p)
		var m pb.DataPacket
		genErr := proto.Unmarshal(b, &m)
		if (err == nil) != (genErr == nil) {
			t.Fatalf("ParseDataPacket: %v, generated decoder: %v", err, genErr)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if gen := fromPB(&m); !equalPackets(&p, gen) {
			t.Fatalf("ParseDataPacket read %s, generated decoder %s", describe(&p), describe(gen))
		}

		body := AppendDataPacket(nil, &p)
		if len(body) != DataPacketSize(&p) {
			t.Fatalf("DataPacketSize = %d, body is %d bytes", DataPacketSize(&p), len(body))
		}
		// proto.Marshal keeps unknown fields, which ParseDataPacket skips.
		m.ProtoReflect().SetUnknown(nil)
		for _, fr := range m.Frames {
			fr.ProtoReflect().SetUnknown(nil)
		}
		if want, err := (proto.MarshalOptions{Deterministic: true}).Marshal(&m); err != nil || !bytes.Equal(body, want) {
			t.Fatalf("AppendDataPacket wrote %x, proto.Marshal %x (%v)", body, want, err)
		}
		var again DataPacket
		if err := ParseDataPacket(body, &again); err != nil {
			t.Fatalf("parsing our own encoding: %v", err)
		}
		if !equalPackets(&p, &again) {
			t.Fatalf("re-encoded %s, parsed back %s", describe(&p), describe(&again))
		}
	})
}

func parseDataPacketSeeds() map[string][]any {
	seeds := map[string][]any{}
	for name, p := range dataPackets() {
		if name == "32 KiB" {
			continue // the fuzzer learns nothing more from a long payload
		}
		seeds[name] = []any{AppendDataPacket(nil, p)}
	}
	for _, c := range encodingCases() {
		seeds[c.name] = []any{c.b}
	}
	for _, c := range malformedCases() {
		seeds["malformed "+c.name] = []any{c.b}
	}
	return seeds
}

func TestAppendDataPacketHeader(t *testing.T) {
	for _, tc := range []struct {
		packetID, streamID, offset uint64
		dataLen                    int
	}{
		{0, 0, 0, 1},
		{1, 2, 3, 100},
		{1 << 40, 1<<62 + 5, 1 << 50, 65000},
		{7, 0, 1 << 20, 127},
		{0, 9, 0, 128},
	} {
		data := make([]byte, tc.dataLen)
		for i := range data {
			data[i] = byte(i * 7)
		}
		p := DataPacket{PacketID: tc.packetID, Frames: []DataFrame{{StreamID: tc.streamID, Offset: tc.offset, Data: data}}}
		want := AppendDataPacketMessage(nil, &p)
		got := append(AppendDataPacketHeader(nil, tc.packetID, tc.streamID, tc.offset, tc.dataLen), data...)
		if !bytes.Equal(got, want) {
			t.Errorf("%+v: header+data\n%x\nwant\n%x", tc, got[:min(len(got), 40)], want[:min(len(want), 40)])
		}
	}
}
