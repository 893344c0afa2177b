package data

import (
	"bytes"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
)

// fuzzInput hands out fuzz bytes as numbers, reading zeros once exhausted.
type fuzzInput []byte

func (in *fuzzInput) byte() byte {
	if len(*in) == 0 {
		return 0
	}
	b := (*in)[0]
	*in = (*in)[1:]
	return b
}

func (in *fuzzInput) uint(nbytes int) uint64 {
	var v uint64
	for range nbytes {
		v = v<<8 | uint64(in.byte())
	}
	return v
}

// recvModel is the obvious, slow RecvBuffer: one slot per byte of a small
// universe starting at origin, with a bitset of the slots written and not yet
// read, so the full comparison after every operation scans words, not bytes.
type recvModel struct {
	origin  uint64
	limit   uint64 // positions at or past limit would lie beyond 2^64
	data    []byte
	have    bitset
	readOff uint64 // relative to origin
	end     uint64 // relative; nothing at or past it was stored
	highest uint64 // absolute
}

// fuzzUniverse spans several blocks so writes and reads cross block
// boundaries, while a full scan after every operation stays cheap.
const fuzzUniverse = 5*blockSize + 1000

// fuzzMaxOps bounds the work per input: long runs of operations add little
// coverage but make each execution, and so minimisation, slow.
const fuzzMaxOps = 64

// Fuzz input layout: one byte picks where the stream lives (from zero, just
// below 2^64 so writes get clipped, or at an unaligned offset in the middle
// of uint64 with room below the read offset), then each operation is an op
// byte followed by its arguments.
func FuzzRecvBuffer(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0x40, 0, 7, 4, 0x40, 0})
	f.Add([]byte{1, 0, 1, 0x38, 0, 0xff, 0xff, 9, 4, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 1})
	f.Add([]byte{2, 0, 0, 0x10, 0, 0x10, 0, 3, 0, 0, 0, 0x20, 0, 5, 7, 0, 0, 0, 0, 0x40, 0, 4, 4, 0xff, 0xff})
	// Discard (op 6), then the discarded bytes written again with other content, across
	// blocks; below the read offset and at the top of uint64; everything, then Release.
	f.Add([]byte{0, 0, 0, 0, 0x80, 0, 1, 1, 0, 0x80, 0, 0x40, 0, 2, 6, 0, 0x40, 0, 0x60, 0, 4, 0x40, 0,
		2, 0, 0x30, 0, 0x80, 0, 9, 5, 0x80, 0})
	f.Add([]byte{1, 0, 0, 0, 0, 0x30, 0, 3, 6, 0, 0, 0, 0x10, 0, 4, 0x40, 0, 2, 0x01, 0x20, 0, 0xff, 0xff, 4,
		6, 0x01, 0x20, 0, 0x10, 0, 6, 0x01, 0x30, 0, 0xff, 0xff})
	f.Add([]byte{2, 3, 0, 0, 0, 0xff, 0xff, 7, 6, 0, 0, 0, 0xff, 0xff, 3, 0, 0, 0, 0x80, 0, 8, 4, 0xff, 0xff,
		7, 6, 0, 0, 0, 0x10, 0})
	f.Fuzz(recvBufferOps)
}

func recvBufferOps(t *testing.T, in []byte) {
	input := fuzzInput(in)
	m := &recvModel{
		data: make([]byte, fuzzUniverse),
		have: make(bitset, (fuzzUniverse+63)/64),
	}
	switch input.byte() % 3 {
	case 1:
		m.origin = math.MaxUint64 - (fuzzUniverse - 5000)
		m.readOff = 1000
	case 2:
		m.origin = 1<<62 + 12345
		m.readOff = 1000
	}
	m.limit = min(fuzzUniverse, math.MaxUint64-m.origin)
	b := newRecvBufferAt(m.origin + m.readOff)
	buf := make([]byte, 2*blockSize)
	for op := 0; len(input) > 0 && op < fuzzMaxOps; op++ {
		switch kind := input.byte() % 8; {
		case kind < 4:
			// Offsets stay below 2^64; lengths may run past it.
			off := input.uint(3) % min(fuzzUniverse, m.limit+1)
			n := input.uint(2) % (fuzzUniverse - off + 1)
			// Writes at one offset with different seeds carry different
			// bytes, so a broken first-writer-wins shows.
			seed := uint64(input.byte())
			p := fuzzNoise[seed : seed+n]
			got := b.Write(m.origin+off, p)
			if want := m.write(off, p); got != want {
				t.Fatalf("op %d: Write(%d, %d bytes) = %d, want %d", op, off, n, got, want)
			}
		case kind < 6:
			n := input.uint(2) % uint64(len(buf)+1)
			got := b.Read(buf[:n])
			want := m.read(int(n))
			if !bytes.Equal(buf[:got], want) {
				t.Fatalf("op %d: Read(%d) = %d bytes %x, want %d bytes %x", op, n, got, buf[:got], len(want), want)
			}
		case kind < 7:
			off := input.uint(3) % min(fuzzUniverse, m.limit+1)
			n := input.uint(2) % (m.limit - off + 1) // an end past 2^64 has no uint64
			got := b.Discard(m.origin+off, m.origin+off+n)
			if want := m.discard(off, off+n); got != want {
				t.Fatalf("op %d: Discard(%d, %d) = %d, want %d", op, off, off+n, got, want)
			}
		default:
			b.Release()
			m.release()
		}
		m.check(t, op, b)
	}
}

// write stores p at relative offset off where nothing was stored, and returns
// how many bytes it stored.
func (m *recvModel) write(off uint64, p []byte) int {
	end := min(off+uint64(len(p)), m.limit)
	if end > off {
		m.highest = max(m.highest, m.origin+end)
	}
	m.end = max(m.end, end)
	n := 0
	for i := max(off, m.readOff); i < end; {
		gap := m.have.next(i, end, false)
		if gap == end {
			break
		}
		i = m.have.next(gap, end, true)
		copy(m.data[gap:i], p[gap-off:])
		m.have.setRange(gap, i, true)
		n += int(i - gap)
	}
	return n
}

func (m *recvModel) read(n int) []byte {
	end := m.have.next(m.readOff, min(m.readOff+uint64(n), m.limit), false)
	out := m.data[m.readOff:end]
	m.have.setRange(m.readOff, end, false)
	m.readOff = end
	return out
}

func (m *recvModel) release() { clear(m.have) }

// discard forgets what was stored in [off, end) at or above the read offset, and
// returns how many bytes that was.
func (m *recvModel) discard(off, end uint64) int {
	off, end = max(off, m.readOff), min(end, m.limit)
	n := 0
	for i := off; i < end; {
		from := m.have.next(i, end, true)
		i = m.have.next(from, end, false)
		n += int(i - from)
	}
	if off < end {
		m.have.setRange(off, end, false)
	}
	return n
}

// check compares every observable of b with the model.
func (m *recvModel) check(t *testing.T, op int, b *RecvBuffer) {
	t.Helper()
	if got, want := b.ReadOffset(), m.origin+m.readOff; got != want {
		t.Fatalf("op %d: ReadOffset() = %d, want %d", op, got, want)
	}
	if got := b.HighestReceived(); got != m.highest {
		t.Fatalf("op %d: HighestReceived() = %d, want %d", op, got, m.highest)
	}
	var want []Range
	readable := 0
	blocks := 0
	lastBlock := uint64(math.MaxUint64)
	for i := m.readOff; ; {
		start := m.have.next(i, m.end, true)
		if start == m.end {
			break
		}
		end := m.have.next(start, m.end, false)
		r := Range{m.origin + start, m.origin + end}
		want = append(want, r)
		blocks += int((r.End-1)/blockSize - r.Start/blockSize + 1)
		if r.Start/blockSize == lastBlock {
			blocks--
		}
		lastBlock = (r.End - 1) / blockSize
		i = end
	}
	if len(want) > 0 && want[0].Start == m.origin+m.readOff {
		readable = int(want[0].End - want[0].Start)
	}
	if got := b.Received().Ranges(); !slices.Equal(got, want) {
		t.Fatalf("op %d: Received() = %v, want %v", op, got, want)
	}
	checkInvariants(t, b.Received())
	if got := b.Readable(); got != readable {
		t.Fatalf("op %d: Readable() = %d, want %d", op, got, readable)
	}
	// Peek shows each received range as stored, and refuses one byte more.
	for _, r := range want {
		var peeked []byte
		if !b.Peek(r.Start, r.End, func(p []byte) { peeked = append(peeked, p...) }) {
			t.Fatalf("op %d: Peek(%d, %d) refused a received range", op, r.Start, r.End)
		}
		if w := m.data[r.Start-m.origin : r.End-m.origin]; !bytes.Equal(peeked, w) {
			t.Fatalf("op %d: Peek(%d, %d) = %x, want %x", op, r.Start, r.End, peeked, w)
		}
		if r.End < m.origin+m.limit && b.Peek(r.Start, r.End+1, func([]byte) { t.Fatalf("op %d: Peek past a received range called fn", op) }) {
			t.Fatalf("op %d: Peek(%d, %d) accepted a byte never received", op, r.Start, r.End+1)
		}
	}
	// Exactly the blocks holding unread bytes are held; that is what keeps
	// memory within one block of the received window.
	if got := b.BufferedBlocks(); got != blocks {
		t.Fatalf("op %d: BufferedBlocks() = %d, want %d", op, got, blocks)
	}
	window := uint64(0)
	if m.highest > b.ReadOffset() {
		window = m.highest - b.ReadOffset()
	}
	if got := uint64(b.BufferedBlocks()); got > window/blockSize+2 {
		t.Fatalf("op %d: BufferedBlocks() = %d for a window of %d bytes", op, got, window)
	}
}

// rangeSetUniverse is small so the model is one bool per value, yet large
// enough for many ranges; set at the top of uint64 it checks the ends that
// touch 2^64.
const rangeSetUniverse = 300

func FuzzRangeSet(f *testing.F) {
	f.Add([]byte{0, 0, 10, 20, 0, 30, 40, 0, 5, 35, 1, 12, 14, 2, 15, 0})
	f.Add([]byte{1, 0, 0, 255, 1, 10, 20, 2, 100, 0, 0, 1, 44, 1, 0, 255})
	f.Add([]byte{0, 0, 50, 40, 1, 0, 0, 0, 1, 2, 0, 3, 4, 0, 5, 6, 0, 2, 5})
	f.Fuzz(rangeSetOps)
}

func rangeSetOps(t *testing.T, in []byte) {
	input := fuzzInput(in)
	var origin uint64
	if input.byte()%2 == 1 {
		origin = math.MaxUint64 - rangeSetUniverse
	}
	var s RangeSet
	var model [rangeSetUniverse]bool
	num := func() uint64 { return input.uint(2) % (rangeSetUniverse + 1) }
	// RangeSet operations are cheap, so an input may hold more of them.
	for op := 0; len(input) > 0 && op < 4*fuzzMaxOps; op++ {
		kind := input.byte() % 3
		a, e := num(), num()
		switch kind {
		case 0:
			s.Add(origin+a, origin+e)
			for i := a; i < e; i++ {
				model[i] = true
			}
		case 1:
			s.Remove(origin+a, origin+e)
			for i := a; i < e; i++ {
				model[i] = false
			}
		case 2:
			s.RemoveBelow(origin + a)
			for i := range a {
				model[i] = false
			}
		}
		checkRangeSet(t, op, &s, model[:], origin, a, e)
	}
}

// checkRangeSet compares s with the model and asks the queries about
// [a, e) that the last operation used, plus their edges.
func checkRangeSet(t *testing.T, op int, s *RangeSet, model []bool, origin, a, e uint64) {
	t.Helper()
	checkInvariants(t, s)
	var want []Range
	var size uint64
	for i, in := range model {
		if !in {
			continue
		}
		size++
		x := origin + uint64(i)
		if n := len(want); n > 0 && want[n-1].End == x {
			want[n-1].End++
		} else {
			want = append(want, Range{x, x + 1})
		}
	}
	if got := s.Ranges(); !slices.Equal(got, want) {
		t.Fatalf("op %d: Ranges() = %v, want %v", op, got, want)
	}
	if s.Len() != len(want) || s.Size() != size {
		t.Fatalf("op %d: Len %d Size %d, want %d %d", op, s.Len(), s.Size(), len(want), size)
	}
	if v, ok := s.Min(); ok != (len(want) > 0) || ok && v != want[0].Start {
		t.Fatalf("op %d: Min() = %d, %v", op, v, ok)
	}
	if v, ok := s.Max(); ok != (len(want) > 0) || ok && v != want[len(want)-1].End {
		t.Fatalf("op %d: Max() = %d, %v", op, v, ok)
	}
	in := func(i uint64) bool { return i < uint64(len(model)) && model[i] }
	for _, x := range []uint64{a, e, a - 1, e - 1, a + 1} {
		if got := s.Contains(origin + x); got != in(x) {
			t.Fatalf("op %d: Contains(%d) = %v, want %v", op, origin+x, got, in(x))
		}
	}
	for _, r := range [][2]uint64{{a, e}, {a, a + 1}, {min(a, e), max(a, e)}} {
		if r[1] > uint64(len(model)) {
			continue // beyond what the model describes
		}
		var missing []Range
		for i := r[0]; i < r[1]; i++ {
			if in(i) {
				continue
			}
			x := origin + i
			if n := len(missing); n > 0 && missing[n-1].End == x {
				missing[n-1].End++
			} else {
				missing = append(missing, Range{x, x + 1})
			}
		}
		all := len(missing) == 0
		if got := s.ContainsRange(origin+r[0], origin+r[1]); got != all {
			t.Fatalf("op %d: ContainsRange(%d, %d) = %v, want %v", op, origin+r[0], origin+r[1], got, all)
		}
		if got := s.Missing(nil, origin+r[0], origin+r[1]); !slices.Equal(got, missing) {
			t.Fatalf("op %d: Missing(%d, %d) = %v, want %v", op, origin+r[0], origin+r[1], got, missing)
		}
	}
}

// fuzzNoise is the content of fuzz writes: a write takes len bytes starting
// at its seed, which is cheaper than generating them for every write.
var fuzzNoise = func() []byte {
	p := make([]byte, fuzzUniverse+256)
	r := rand.New(rand.NewPCG(5, 6))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}()

// bitset is the RecvBuffer model's set of small integers, word-wise so that
// operations over whole blocks stay cheap.
type bitset []uint64

// setRange sets the bits of [from, end) to v.
func (s bitset) setRange(from, end uint64, v bool) {
	for i := from; i < end; {
		n := min(64-i%64, end-i)
		mask := (uint64(1)<<n - 1) << (i % 64) // n == 64 wraps to all ones
		if v {
			s[i/64] |= mask
		} else {
			s[i/64] &^= mask
		}
		i += n
	}
}

// next returns the first i in [from, end) whose bit is v, or end.
func (s bitset) next(from, end uint64, v bool) uint64 {
	for i := from; i < end; {
		w := s[i/64]
		if !v {
			w = ^w
		}
		w >>= i % 64
		if w != 0 {
			return min(i+uint64(bits.TrailingZeros64(w)), end)
		}
		i += 64 - i%64
	}
	return end
}
