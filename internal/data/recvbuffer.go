package data

import (
	"cmp"
	"math"
	"slices"
	"sync"
)

// BlockSize is the unit of receive memory RecvBuffer holds (BufferedBlocks).
const BlockSize = blockSize

// blockSize is the unit of receive memory. 16 KiB holds about a dozen
// packets' worth of payload, so a block is taken from the pool rarely, while a
// slow reader pins at most one partly-read block beyond its window.
const blockSize = 16 << 10

type block [blockSize]byte

// blockPool is shared by every stream: a session with thousands of mostly idle
// streams then holds memory only for the bytes actually in flight.
var blockPool = sync.Pool{New: func() any { return new(block) }}

// blockRef is one held block: it stores stream bytes
// [idx*blockSize, (idx+1)*blockSize).
type blockRef struct {
	idx uint64
	b   *block
}

// RecvBuffer is the receive side of one logical stream: it holds bytes received
// at arbitrary offsets at or above the read offset and hands them out in order.
//
// Bytes live in fixed-size blocks from a package-level pool, allocated only for
// offsets actually written and returned as soon as reading passes them, so the
// memory held is at most (HighestReceived - ReadOffset) rounded up to blocks,
// plus one block. The caller bounds HighestReceived (flow control) and, against
// a peer that fragments the stream on purpose, Received().Len(); RecvBuffer
// itself enforces nothing but correctness, and no input makes it panic.
//
// The zero value is ready to use. RecvBuffer is not safe for concurrent use.
type RecvBuffer struct {
	readOff  uint64
	highest  uint64
	received RangeSet // at or above readOff; the bytes RecvBuffer vouches for

	// blocks[head:] are the held blocks, sorted by idx. They are sparse rather
	// than a dense slice indexed from the read offset, because a write far
	// beyond the read offset (up to 2^64) must cost one block, not an index
	// sized to the distance. In order, a lookup hits the last block (writing)
	// or the first one (reading), so the dense case stays O(1). Reading
	// advances head instead of shifting, and the slice is compacted only when
	// appending would otherwise have to grow it (see appendBlock).
	blocks []blockRef
	head   int

	missing []Range // scratch for Write, kept to avoid allocating per call
}

// Write stores p at offset off and returns how many bytes it newly stored.
// Bytes below the read offset and bytes already received are left as they
// are: the first writer wins, so a late or hostile duplicate can never change
// data that was buffered or delivered. Bytes that would lie at or beyond 2^64
// are dropped.
func (b *RecvBuffer) Write(off uint64, p []byte) int {
	if room := math.MaxUint64 - off; uint64(len(p)) > room {
		p = p[:room]
	}
	if len(p) == 0 {
		return 0
	}
	end := off + uint64(len(p))
	b.highest = max(b.highest, end)
	if end <= b.readOff {
		return 0
	}
	if off < b.readOff {
		p = p[b.readOff-off:]
		off = b.readOff
	}
	b.missing = b.received.Missing(b.missing[:0], off, end)
	n := 0
	for _, r := range b.missing {
		b.store(r.Start, p[r.Start-off:r.End-off])
		n += int(r.End - r.Start)
	}
	b.received.Add(off, end)
	return n
}

// store copies p into the blocks at offset off, taking blocks as needed.
func (b *RecvBuffer) store(off uint64, p []byte) {
	for len(p) > 0 {
		blk := b.blockFor(off / blockSize)
		n := copy(blk[off%blockSize:], p)
		p = p[n:]
		off += uint64(n)
	}
}

// blockFor returns the block with index idx, taking it from the pool if absent.
func (b *RecvBuffer) blockFor(idx uint64) *block {
	live := b.blocks[b.head:]
	if n := len(live); n == 0 || idx > live[n-1].idx {
		return b.appendBlock(idx)
	}
	if last := live[len(live)-1]; last.idx == idx {
		return last.b
	}
	i, found := slices.BinarySearchFunc(live, idx, compareBlock)
	if found {
		return live[i].b
	}
	blk := blockPool.Get().(*block)
	if i == 0 && b.head > 0 {
		// Typically the block at the read offset, released when the reader
		// caught up and now written again: reuse the slot reading freed.
		b.head--
		b.blocks[b.head] = blockRef{idx, blk}
		return blk
	}
	b.blocks = slices.Insert(b.blocks, b.head+i, blockRef{idx, blk})
	return blk
}

// appendBlock takes a block from the pool and appends it as index idx, which
// is above every held index.
func (b *RecvBuffer) appendBlock(idx uint64) *block {
	// Compact instead of growing once a quarter of the array is dead space:
	// the steady state then reuses one array, and each compaction's copy is
	// paid for by the cap/4 or more releases since the last one.
	if len(b.blocks) == cap(b.blocks) && b.head > 0 && b.head >= cap(b.blocks)/4 {
		n := copy(b.blocks, b.blocks[b.head:])
		clear(b.blocks[n:])
		b.blocks = b.blocks[:n]
		b.head = 0
	}
	blk := blockPool.Get().(*block)
	b.blocks = append(b.blocks, blockRef{idx, blk})
	return blk
}

// Read copies contiguous bytes from the read offset into p, advances the read
// offset past them and returns how many it copied. It returns 0 when the next
// byte has not arrived yet.
func (b *RecvBuffer) Read(p []byte) int {
	n := min(len(p), b.Readable())
	if n == 0 {
		return 0
	}
	p = p[:n]
	off := b.readOff
	for i := b.head; len(p) > 0; i++ {
		// Every byte of [readOff, readOff+n) was stored and none released, so
		// the held blocks from head on are the consecutive ones covering it.
		c := copy(p, b.blocks[i].b[off%blockSize:])
		p = p[c:]
		off += uint64(c)
	}
	b.readOff = off
	b.received.RemoveBelow(off)
	b.releaseBelow(off)
	return n
}

// releaseBelow returns to the pool every block that holds no unread byte once
// the read offset is off.
func (b *RecvBuffer) releaseBelow(off uint64) {
	// The block containing off goes too when nothing after off in it has
	// arrived: a reader that keeps up then holds no memory between writes, at
	// the price of a pool round trip per write. Blocks above it were taken for
	// bytes still unread, so they always stay.
	keep := off / blockSize
	if m, ok := b.received.Min(); !ok || m/blockSize > keep {
		keep++
	}
	for b.head < len(b.blocks) && b.blocks[b.head].idx < keep {
		blockPool.Put(b.blocks[b.head].b)
		b.blocks[b.head] = blockRef{}
		b.head++
	}
	if b.head == len(b.blocks) {
		b.blocks = b.blocks[:0]
		b.head = 0
	}
}

// Readable returns how many contiguous bytes are available at the read offset.
func (b *RecvBuffer) Readable() int {
	r := b.received.Ranges()
	if len(r) == 0 || r[0].Start != b.readOff {
		return 0
	}
	return int(min(r[0].End-r[0].Start, math.MaxInt))
}

// ReadOffset returns the stream offset of the next byte Read will return.
func (b *RecvBuffer) ReadOffset() uint64 { return b.readOff }

// Received returns the ranges received at or above the read offset. The set
// belongs to the buffer: the caller must not modify it.
func (b *RecvBuffer) Received() *RangeSet { return &b.received }

// HighestReceived returns the highest end offset of any non-empty Write, even
// one that stored nothing, or 0 if there was none. Flow control charges the
// peer up to here.
func (b *RecvBuffer) HighestReceived() uint64 { return b.highest }

// BufferedBlocks returns how many blocks the buffer holds.
func (b *RecvBuffer) BufferedBlocks() int { return len(b.blocks) - b.head }

// Release drops every buffered byte and returns every block to the pool, as
// when the reader gives up on the stream. The read offset and HighestReceived
// stay; the dropped ranges count as never received, so a later Write stores
// them afresh.
func (b *RecvBuffer) Release() {
	for _, r := range b.blocks[b.head:] {
		blockPool.Put(r.b)
	}
	clear(b.blocks)
	b.blocks = b.blocks[:0]
	b.head = 0
	b.received.r = b.received.r[:0]
}

// Peek calls fn with the stored bytes of [off, end), in order, in as many calls
// as blocks hold them, without reading them. Every byte of the range must have
// been received and lie at or above the read offset; otherwise Peek calls fn
// for nothing and returns false. fn must not keep or modify the slices.
func (b *RecvBuffer) Peek(off, end uint64, fn func([]byte)) bool {
	if off >= end {
		return true
	}
	if off < b.readOff || !b.received.ContainsRange(off, end) {
		return false
	}
	live := b.blocks[b.head:]
	i, _ := slices.BinarySearchFunc(live, off/blockSize, compareBlock)
	// Received bytes have their blocks, consecutive from the one holding off.
	for ; off < end; i++ {
		from := off % blockSize
		n := min(end-off, blockSize-from)
		fn(live[i].b[from : from+n])
		off += n
	}
	return true
}

// Discard forgets the bytes received in [start, end) at or above the read
// offset, as if they had never arrived, so that a later Write stores them
// afresh: the way to replace bytes found wrong, which Write never overwrites.
// Blocks left holding no received byte go back to the pool. HighestReceived
// stays. It returns how many bytes it forgot.
func (b *RecvBuffer) Discard(start, end uint64) int {
	start = max(start, b.readOff)
	if start >= end || !b.received.Overlaps(start, end) {
		return 0
	}
	n := 0
	b.missing = b.received.Intersect(b.missing[:0], start, end)
	for _, r := range b.missing {
		n += int(r.End - r.Start)
	}
	b.received.Remove(start, end)
	first, last := start/blockSize, (end-1)/blockSize
	keep := b.blocks[:b.head]
	for _, r := range b.blocks[b.head:] {
		if r.idx >= first && r.idx <= last && !b.received.Overlaps(r.idx*blockSize, blockEnd(r.idx)) {
			blockPool.Put(r.b)
			continue
		}
		keep = append(keep, r)
	}
	clear(b.blocks[len(keep):])
	b.blocks = keep
	if b.head == len(b.blocks) {
		b.blocks = b.blocks[:0]
		b.head = 0
	}
	return n
}

// blockEnd is the first offset after block idx, or 2^64-1 for the last block
// (2^64 has no uint64; no byte is stored at 2^64-1, since its end would be 2^64).
func blockEnd(idx uint64) uint64 {
	if idx >= math.MaxUint64/blockSize {
		return math.MaxUint64
	}
	return (idx + 1) * blockSize
}

// compareBlock orders a block reference against a block index, for binary searches of
// RecvBuffer.blocks.
func compareBlock(r blockRef, idx uint64) int { return cmp.Compare(r.idx, idx) }
