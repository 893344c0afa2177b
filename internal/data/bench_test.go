package data

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkRecvBufferInOrder is the common case: one path, in order, the
// reader keeping up. Packet-sized writes show per-call overhead; 32 KiB
// writes show copy throughput.
func BenchmarkRecvBufferInOrder(b *testing.B) {
	for _, size := range []int{1200, 32 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			chunk := pattern(0, size)
			buf := make([]byte, 32<<10)
			var r RecvBuffer
			var off uint64
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				r.Write(off, chunk)
				off += uint64(size)
				for r.Read(buf) > 0 {
				}
			}
		})
	}
}

// BenchmarkRecvBufferOutOfOrder fills a 1 MiB window from packets in random
// order, as several paths racing each other would, then reads it. Half the
// packets arrive twice, as after a retransmission.
func BenchmarkRecvBufferOutOfOrder(b *testing.B) {
	const window = 1 << 20
	const pkt = 1200
	var offs []uint64
	for off := uint64(0); off < window; off += pkt {
		offs = append(offs, off)
	}
	offs = append(offs, offs[:len(offs)/2]...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(offs), func(i, j int) { offs[i], offs[j] = offs[j], offs[i] })
	chunk := pattern(0, pkt)
	buf := make([]byte, 32<<10)
	var r RecvBuffer
	var base uint64
	b.SetBytes(window)
	b.ReportAllocs()
	for b.Loop() {
		for _, off := range offs {
			n := min(pkt, window-off)
			r.Write(base+off, chunk[:n])
		}
		for r.Read(buf) > 0 {
		}
		base += window
	}
}

// BenchmarkRangeSetAddInOrder is the receive fast path of RangeSet alone.
func BenchmarkRangeSetAddInOrder(b *testing.B) {
	var s RangeSet
	var off uint64
	b.ReportAllocs()
	for b.Loop() {
		s.Add(off, off+1200)
		off += 1200
	}
}

// BenchmarkRangeSetAddRandom inserts packets in random order into a window of
// 1000 packets, keeping up to hundreds of ranges alive.
func BenchmarkRangeSetAddRandom(b *testing.B) {
	const n = 1000
	perm := rand.New(rand.NewPCG(1, 2)).Perm(n)
	var s RangeSet
	var base uint64
	b.ReportAllocs()
	for b.Loop() {
		for _, i := range perm {
			off := base + uint64(i)*1200
			s.Add(off, off+1200)
		}
		base += n * 1200
		s.RemoveBelow(base)
	}
}
