package data

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// pattern returns the n stream bytes at offset off of a stream whose content
// depends on the offset, so misplaced bytes show up.
func pattern(off uint64, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		x := off + uint64(i)
		p[i] = byte(x ^ x>>8 ^ x>>16 ^ x>>24)
	}
	return p
}

// newRecvBufferAt returns a buffer whose stream begins at off, for testing
// offsets that could never be reached by reading from zero.
func newRecvBufferAt(off uint64) *RecvBuffer {
	return &RecvBuffer{readOff: off}
}

// readAll reads everything readable in small steps, which crosses block
// boundaries at odd positions.
func readAll(b *RecvBuffer) []byte {
	var out []byte
	buf := make([]byte, 1000)
	for {
		n := b.Read(buf)
		if n == 0 {
			return out
		}
		out = append(out, buf[:n]...)
	}
}

func TestRecvBufferOrders(t *testing.T) {
	const total = 5*blockSize + 123
	chunks := func(size int) []Range {
		var rr []Range
		for off := 0; off < total; off += size {
			rr = append(rr, Range{uint64(off), uint64(min(off+size, total))})
		}
		return rr
	}
	reversed := func(rr []Range) []Range { slices.Reverse(rr); return rr }
	shuffled := func(rr []Range) []Range {
		r := rand.New(rand.NewPCG(1, 2))
		r.Shuffle(len(rr), func(i, j int) { rr[i], rr[j] = rr[j], rr[i] })
		return rr
	}
	overlapping := func() []Range {
		// Each write overlaps both neighbours by 300 bytes.
		var rr []Range
		for off := 0; off < total; off += 1000 {
			rr = append(rr, Range{uint64(max(off-300, 0)), uint64(min(off+1300, total))})
		}
		return shuffled(rr)
	}
	duplicated := func() []Range {
		rr := chunks(1200)
		return shuffled(append(rr, slices.Clone(rr)...))
	}
	tests := []struct {
		name   string
		writes []Range
	}{
		{"in order", chunks(1200)},
		{"in order whole blocks", chunks(blockSize)},
		{"one write", chunks(total)},
		{"one byte at a time", chunks(1)[:3*blockSize]},
		{"reversed", reversed(chunks(1200))},
		{"reversed odd size", reversed(chunks(blockSize + 7))},
		{"random order", shuffled(chunks(1200))},
		{"random order large", shuffled(chunks(3 * blockSize / 2))},
		{"overlapping", overlapping()},
		{"duplicated", duplicated()},
		{"one covering all after pieces", append(shuffled(chunks(999)), Range{0, total})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b RecvBuffer
			var want RangeSet
			for _, w := range tt.writes {
				n := b.Write(w.Start, pattern(w.Start, int(w.End-w.Start)))
				var miss []Range
				if got := uint64(n); got != sizeOf(want.Missing(miss, w.Start, w.End)) {
					t.Fatalf("Write(%v) = %d, want %d", w, n, sizeOf(want.Missing(miss, w.Start, w.End)))
				}
				want.Add(w.Start, w.End)
			}
			end, _ := want.Max()
			got := readAll(&b)
			if !bytes.Equal(got, pattern(0, int(end))) {
				t.Fatalf("read %d bytes that differ from the %d written", len(got), end)
			}
			if b.ReadOffset() != end || b.HighestReceived() != end || b.Readable() != 0 {
				t.Errorf("ReadOffset %d HighestReceived %d Readable %d, want %d %d 0",
					b.ReadOffset(), b.HighestReceived(), b.Readable(), end, end)
			}
			if n := b.BufferedBlocks(); n != 0 {
				t.Errorf("BufferedBlocks() = %d after reading everything, want 0", n)
			}
			if b.Received().Len() != 0 {
				t.Errorf("Received() = %v after reading everything", b.Received().Ranges())
			}
		})
	}
}

func sizeOf(rr []Range) uint64 {
	var n uint64
	for _, r := range rr {
		n += r.End - r.Start
	}
	return n
}

func TestRecvBufferGaps(t *testing.T) {
	var b RecvBuffer
	buf := make([]byte, 100)
	b.Write(0, pattern(0, 10))
	b.Write(20, pattern(20, 10))
	b.Write(40, pattern(40, 10))
	if got := b.Readable(); got != 10 {
		t.Fatalf("Readable() = %d, want 10", got)
	}
	if n := b.Read(buf); n != 10 || !bytes.Equal(buf[:n], pattern(0, 10)) {
		t.Fatalf("Read = %d %v", n, buf[:n])
	}
	if n := b.Read(buf); n != 0 || b.Readable() != 0 {
		t.Fatalf("Read at a gap = %d, Readable() = %d, want 0 0", n, b.Readable())
	}
	if got, want := b.Received().Ranges(), []Range{{20, 30}, {40, 50}}; !slices.Equal(got, want) {
		t.Fatalf("Received() = %v, want %v", got, want)
	}
	// Filling the first gap unblocks up to the second one only.
	b.Write(10, pattern(10, 10))
	if got := b.Readable(); got != 20 {
		t.Fatalf("Readable() = %d, want 20", got)
	}
	if n := b.Read(buf[:5]); n != 5 || b.ReadOffset() != 15 {
		t.Fatalf("short Read = %d, ReadOffset %d, want 5 15", n, b.ReadOffset())
	}
	b.Write(30, pattern(30, 10))
	if got := readAll(&b); !bytes.Equal(got, pattern(15, 35)) {
		t.Fatalf("read %v", got)
	}
	if n := b.Read(nil); n != 0 {
		t.Fatalf("Read(nil) = %d", n)
	}
}

func TestRecvBufferBelowReadOffset(t *testing.T) {
	tests := []struct {
		name    string
		off     uint64
		n       int
		stored  int
		readEnd uint64
	}{
		{"wholly below", 0, 50, 0, 100},
		{"ending at read offset", 50, 50, 0, 100},
		{"straddling", 50, 100, 50, 150},
		{"at read offset", 100, 10, 10, 110},
		{"empty", 100, 0, 0, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b RecvBuffer
			b.Write(0, pattern(0, 100))
			readAll(&b)
			// Different content: anything below the read offset must be ignored.
			p := bytes.Repeat([]byte{0xEE}, tt.n)
			if got := b.Write(tt.off, p); got != tt.stored {
				t.Fatalf("Write = %d, want %d", got, tt.stored)
			}
			got := readAll(&b)
			if want := bytes.Repeat([]byte{0xEE}, int(tt.readEnd-100)); !bytes.Equal(got, want) {
				t.Fatalf("read %v, want %v", got, want)
			}
		})
	}
}

func TestRecvBufferFirstWriterWins(t *testing.T) {
	a := bytes.Repeat([]byte{'a'}, 2*blockSize)
	z := bytes.Repeat([]byte{'z'}, 4*blockSize)
	var b RecvBuffer
	b.Write(blockSize, a) // [16K, 48K)
	if n := b.Write(0, z); n != 2*blockSize {
		t.Fatalf("overlapping Write stored %d, want %d", n, 2*blockSize)
	}
	if n := b.Write(blockSize, z[:blockSize]); n != 0 {
		t.Fatalf("duplicate Write stored %d, want 0", n)
	}
	got := readAll(&b)
	want := slices.Concat(z[:blockSize], a, z[:blockSize])
	if !bytes.Equal(got, want) {
		t.Fatal("a later write changed earlier bytes")
	}
}

func TestRecvBufferBlocks(t *testing.T) {
	var b RecvBuffer
	if b.BufferedBlocks() != 0 {
		t.Fatal("zero buffer holds blocks")
	}
	b.Write(0, pattern(0, 2*blockSize+1))
	if got := b.BufferedBlocks(); got != 3 {
		t.Fatalf("BufferedBlocks() = %d, want 3", got)
	}
	// A block goes back as soon as reading passes its end, not before.
	buf := make([]byte, blockSize-1)
	b.Read(buf)
	if got := b.BufferedBlocks(); got != 3 {
		t.Fatalf("after reading all but one byte of the first block: %d blocks, want 3", got)
	}
	b.Read(buf[:1])
	if got := b.BufferedBlocks(); got != 2 {
		t.Fatalf("after reading the first block: %d blocks, want 2", got)
	}
	// Far, sparse writes cost one block each, not the distance between them.
	b.Write(1<<40, []byte{1})
	b.Write(1<<50, []byte{2})
	b.Write(1<<45, []byte{3})
	b.Write(1<<45+blockSize-1, []byte{4, 5}) // straddles into the next block
	if got := b.BufferedBlocks(); got != 2+4 {
		t.Fatalf("after sparse writes: %d blocks, want 6", got)
	}
	readAll(&b)
	if got := b.BufferedBlocks(); got != 4 {
		t.Fatalf("after reading the contiguous part: %d blocks, want 4", got)
	}
	// Writes into held blocks, or fully duplicate, take no new block.
	b.Write(1<<40+1, []byte{9})
	b.Write(1<<50, []byte{9})
	if got := b.BufferedBlocks(); got != 4 {
		t.Fatalf("after writes into held blocks: %d blocks, want 4", got)
	}
}

// Discard is how wrong bytes are replaced: what it forgets is stored afresh by the next
// Write (the first writer wins otherwise), bytes it keeps stay, blocks left empty go back to
// the pool, and nothing below the read offset is touched.
func TestRecvBufferDiscard(t *testing.T) {
	bad := bytes.Repeat([]byte{'x'}, 4*blockSize)
	var b RecvBuffer
	b.Write(0, pattern(0, blockSize))     // block 0: good
	b.Write(blockSize, bad[:3*blockSize]) // blocks 1-3: wrong
	b.Read(make([]byte, 100))             // the reader is inside block 0
	if n := b.Discard(0, blockSize+blockSize/2); n != blockSize-100+blockSize/2 {
		t.Fatalf("Discard forgot %d bytes, want %d (nothing below the read offset)", n, blockSize-100+blockSize/2)
	}
	// Block 0 held only discarded unread bytes; block 1 keeps its second half.
	if got := b.BufferedBlocks(); got != 3 {
		t.Fatalf("after Discard: %d blocks, want 3", got)
	}
	if got := b.Received().Ranges(); !slices.Equal(got, []Range{{blockSize + blockSize/2, 4 * blockSize}}) {
		t.Fatalf("received %v after Discard", got)
	}
	if n := b.Discard(4*blockSize, 5*blockSize); n != 0 {
		t.Fatalf("Discard of nothing forgot %d", n)
	}
	// The good bytes land where the wrong ones were; the wrong ones kept stay.
	if n := b.Write(0, pattern(0, 4*blockSize)); n != blockSize-100+blockSize/2 {
		t.Fatalf("Write after Discard stored %d", n)
	}
	want := slices.Concat(pattern(100, blockSize+blockSize/2-100), bad[:blockSize*5/2])
	if got := readAll(&b); !bytes.Equal(got, want) {
		t.Fatal("read after Discard and Write: not the rewritten bytes")
	}
	if b.BufferedBlocks() != 0 || b.HighestReceived() != 4*blockSize {
		t.Fatalf("after reading all: %d blocks, highest %d", b.BufferedBlocks(), b.HighestReceived())
	}
	// At the top of uint64.
	top := newRecvBufferAt(math.MaxUint64 - 3*blockSize)
	top.Write(math.MaxUint64-3*blockSize, bad[:3*blockSize])
	if n := top.Discard(math.MaxUint64-2*blockSize, math.MaxUint64); n != 2*blockSize {
		t.Fatalf("Discard at the top forgot %d", n)
	}
	if n := top.Write(math.MaxUint64-2*blockSize, pattern(0, 2*blockSize)); n != 2*blockSize {
		t.Fatalf("Write at the top after Discard stored %d", n)
	}
}

// Peek shows received bytes without reading them, across blocks, and only bytes received.
func TestRecvBufferPeek(t *testing.T) {
	var b RecvBuffer
	b.Write(10, pattern(10, 3*blockSize))
	var got []byte
	calls := 0
	if !b.Peek(blockSize-5, 2*blockSize+5, func(p []byte) { got = append(got, p...); calls++ }) {
		t.Fatal("Peek refused received bytes")
	}
	if !bytes.Equal(got, pattern(blockSize-5, blockSize+10)) || calls != 3 {
		t.Fatalf("Peek gave %d bytes in %d calls, want the stored ones in 3", len(got), calls)
	}
	for _, r := range []Range{{0, 20}, {5, 10}, {3*blockSize + 5, 3*blockSize + 11}} {
		if b.Peek(r.Start, r.End, func([]byte) { t.Fatal("fn called") }) {
			t.Fatalf("Peek(%d, %d) accepted bytes never received", r.Start, r.End)
		}
	}
	if b.Readable() != 0 || b.ReadOffset() != 0 {
		t.Fatal("Peek read")
	}
	b.Write(0, pattern(0, 10))
	b.Read(make([]byte, 50))
	if b.Peek(40, 60, func([]byte) {}) {
		t.Fatal("Peek accepted bytes below the read offset")
	}
}

func TestRecvBufferRelease(t *testing.T) {
	var b RecvBuffer
	b.Write(0, pattern(0, 100))
	b.Read(make([]byte, 40))
	b.Write(3*blockSize, pattern(3*blockSize, 10))
	b.Release()
	if b.BufferedBlocks() != 0 || b.Received().Len() != 0 || b.Readable() != 0 {
		t.Fatalf("after Release: %d blocks, received %v, readable %d",
			b.BufferedBlocks(), b.Received().Ranges(), b.Readable())
	}
	if b.ReadOffset() != 40 || b.HighestReceived() != 3*blockSize+10 {
		t.Fatalf("Release moved ReadOffset %d or HighestReceived %d", b.ReadOffset(), b.HighestReceived())
	}
	b.Release() // twice is harmless
	// Dropped bytes count as never received.
	if n := b.Write(0, pattern(0, 100)); n != 60 {
		t.Fatalf("Write after Release stored %d, want 60", n)
	}
	if got := readAll(&b); !bytes.Equal(got, pattern(40, 60)) {
		t.Fatalf("read %v after Release", got)
	}
}

func TestRecvBufferLargeOffsets(t *testing.T) {
	const top = math.MaxUint64
	t.Run("write clipped at 2^64", func(t *testing.T) {
		var b RecvBuffer
		if n := b.Write(top-10, make([]byte, 20)); n != 10 {
			t.Fatalf("Write = %d, want 10", n)
		}
		if n := b.Write(top, make([]byte, 20)); n != 0 {
			t.Fatalf("Write at 2^64-1 = %d, want 0", n)
		}
		if got, want := b.Received().Ranges(), []Range{{top - 10, top}}; !slices.Equal(got, want) {
			t.Fatalf("Received() = %v, want %v", got, want)
		}
		if b.HighestReceived() != top || b.BufferedBlocks() != 1 || b.Readable() != 0 {
			t.Fatalf("HighestReceived %d BufferedBlocks %d Readable %d",
				b.HighestReceived(), b.BufferedBlocks(), b.Readable())
		}
	})
	t.Run("read to 2^64", func(t *testing.T) {
		start := uint64(top - 3*blockSize - 5)
		b := newRecvBufferAt(start)
		p := pattern(start, 3*blockSize+5)
		b.Write(start+100, p[100:])
		b.Write(start, p[:200])
		if got := readAll(b); !bytes.Equal(got, p) {
			t.Fatal("read differs from written")
		}
		if b.ReadOffset() != top || b.BufferedBlocks() != 0 || b.Received().Len() != 0 {
			t.Fatalf("ReadOffset %d BufferedBlocks %d Received %v",
				b.ReadOffset(), b.BufferedBlocks(), b.Received().Ranges())
		}
		if n := b.Write(top-1, []byte{1, 2}); n != 0 {
			t.Fatalf("Write below read offset at 2^64 = %d", n)
		}
	})
	t.Run("readable beyond int", func(t *testing.T) {
		// Readable counts bytes, which a range near 2^64 can exceed as an int;
		// no real buffer holds that much, but the count must not go negative.
		var b RecvBuffer
		b.received.Add(0, top)
		if got := b.Readable(); got != math.MaxInt {
			t.Fatalf("Readable() = %d, want MaxInt", got)
		}
	})
}

func TestRecvBufferAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates and drops pooled blocks")
	}
	var b RecvBuffer
	chunk := pattern(0, 32<<10)
	buf := make([]byte, 32<<10)
	var off uint64
	step := func() {
		b.Write(off, chunk)
		off += uint64(len(chunk))
		for b.Read(buf) > 0 {
		}
	}
	for range 4 {
		step()
	}
	if n := testing.AllocsPerRun(100, step); n != 0 {
		t.Errorf("in-order Write+Read of 32 KiB: %v allocs, want 0", n)
	}

	// A reader that lags a few chunks behind keeps the block index busy at
	// both ends; it must still settle into reusing its arrays.
	lag := func() {
		b.Write(off, chunk)
		off += uint64(len(chunk))
		b.Read(buf)
	}
	for range 3 {
		b.Write(off, chunk)
		off += uint64(len(chunk))
	}
	for range 100 {
		lag()
	}
	if n := testing.AllocsPerRun(100, lag); n != 0 {
		t.Errorf("lagging Write+Read of 32 KiB: %v allocs, want 0", n)
	}
}
