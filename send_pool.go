package kwik

import (
	"sync"
	"sync/atomic"

	"github.com/kwik-go/kwik/internal/wire"
	"github.com/quic-go/quic-go"
)

// The send pool and its batching: a path's real QUIC streams for data, and the queue of
// DataFrames each gathers into DataPackets (see send.go for the send loop above them).

// sendPool is a path's set of real QUIC streams for sending data. A logical stream is
// assigned the least loaded real stream when it first sends; the pool opens another real
// stream when all carry StreamsPerRealStream logical streams (up to MaxRealStreams), and
// closes real streams that fall idle, keeping one for the next logical stream.
type sendPool struct {
	p *path

	mu      sync.Mutex
	streams []*realStream
}

type realStream struct {
	p     *path
	qs    *quic.SendStream
	users int // logical streams assigned; guarded by sendPool.mu

	// closeWhenIdle asks the writer holding mu to close qs when it is done: release never
	// waits for a write that QUIC may be holding up.
	closeWhenIdle atomic.Bool
	closed        atomic.Bool // qs closed; set under mu

	mu  chanMutex // serialises messages on qs
	buf []byte
	pkt wire.DataPacket
	z   compressor
	one [1]wire.DataFrame // writePacket's frame when it goes through writeFrames

	// Batching: a small frame that finds mu taken (a write under way) is copied into the
	// queue and its Write returns; whoever holds mu writes every queued frame, in as few
	// DataPackets as fit, before letting mu go. A frame that finds the stream idle is written
	// at once, after anything queued, so a lone request waits for nothing.
	batch struct {
		mu    sync.Mutex
		cond  sync.Cond // on mu: the queue was taken (room for more)
		queue batchQueue
		spare batchQueue
		err   error // the first write error; later frames fail with it
	}
}

func (sp *sendPool) assign() (*realStream, error) {
	conf := sp.p.sess.conf
	sp.mu.Lock()
	defer sp.mu.Unlock()
	var best *realStream
	for _, rs := range sp.streams {
		if best == nil || rs.users < best.users {
			best = rs
		}
	}
	if best == nil || (best.users >= conf.StreamsPerRealStream && len(sp.streams) < conf.MaxRealStreams) {
		qs, err := sp.p.conn.OpenUniStream()
		switch {
		case err == nil:
			rs := &realStream{p: sp.p, qs: qs, mu: make(chanMutex, 1), buf: make([]byte, 0, sp.p.peer.maxMessageSize+16)}
			rs.batch.cond.L = &rs.batch.mu
			sp.streams = append(sp.streams, rs)
			best = rs
		case best == nil:
			if sp.p.sess.ctx.Err() != nil {
				return nil, sp.p.sess.closeErr()
			}
			if sp.p.ctx.Err() != nil {
				return nil, &Error{Code: CodePathDead, Message: sp.p.id}
			}
			return nil, err
		}
	}
	best.users++
	return best, nil
}

// retain counts one more user of rs, which the pool assigned before; release gives it back.
func (sp *sendPool) retain(rs *realStream) {
	sp.mu.Lock()
	rs.users++
	sp.mu.Unlock()
}

func (sp *sendPool) release(rs *realStream) {
	sp.mu.Lock()
	rs.users--
	if rs.users > 0 {
		sp.mu.Unlock()
		return
	}
	idle := 0
	for _, o := range sp.streams {
		if o.users == 0 {
			idle++
		}
	}
	if idle <= 1 {
		sp.mu.Unlock()
		return
	}
	for i, o := range sp.streams {
		if o == rs {
			sp.streams = append(sp.streams[:i], sp.streams[i+1:]...)
			break
		}
	}
	sp.mu.Unlock()
	rs.closeWhenIdle.Store(true)
	if rs.mu.TryLock() {
		rs.unlockAndDrain() // closes qs if idle, and wakes any small frame's writer
	}
}

// closeIfIdle closes qs once the pool has let it go and no frame is queued (a frame queued
// since the last drain, a logical stream's fin say, is written first). rs.mu is held.
func (rs *realStream) closeIfIdle() {
	if !rs.closeWhenIdle.Load() || rs.closed.Load() {
		return
	}
	rs.batch.mu.Lock()
	queued := len(rs.batch.queue.frames) > 0
	rs.batch.mu.Unlock()
	if !queued {
		rs.closed.Store(true)
		rs.qs.Close()
	}
}

// size reports how many real streams the pool holds (for tests).
func (sp *sendPool) size() int {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return len(sp.streams)
}

// batchQueue is frames waiting to be written, their data copied into one buffer.
type batchQueue struct {
	frames []wire.DataFrame
	data   []byte
}

// maxBatch bounds the bytes queued on one real stream: past it, small writes wait for the
// queue to be written (each frame's own cost is counted on top of its data).
const maxBatch = 64 << 10

// writeFrame sends a frame. A large one goes in a DataPacket of its own, as a header and then
// the caller's bytes, which spares a copy (QUIC copies them anyway), and writeFrame returns
// once QUIC has it. So does a small one that finds the real stream idle; one that finds it busy
// is batched with the small frames of the other logical streams that share this real stream
// (see realStream.batch), unless the session disables batching: writeFrame then returns once
// the frame is queued, and a write error shows on a later call.
// The steady state allocates nothing.
func (rs *realStream) writeFrame(id, off uint64, b []byte, fin bool) error {
	// A large frame, or a small one that finds the real stream idle, is written at once,
	// without a copy into the queue: a lone request waits for nothing.
	direct := (len(b) >= directWriteMin && !fin) || rs.p.sess.conf.DisableBatching
	if direct {
		rs.mu.Lock()
	}
	if direct || rs.mu.TryLock() {
		err := rs.drainLocked() // what was queued before goes first
		if err == nil {
			err = rs.writePacket(id, off, b, fin)
		}
		rs.unlockAndDrain()
		return err
	}
	bt := &rs.batch
	bt.mu.Lock()
	for bt.err == nil && len(bt.queue.data)+len(bt.queue.frames)*32 >= maxBatch {
		bt.cond.Wait() // mu's holder is writing the queue
	}
	if err := bt.err; err != nil {
		bt.mu.Unlock()
		return err
	}
	q := &bt.queue
	if n := len(q.frames); n > 0 && fin && len(b) == 0 {
		// A fin right after its stream's last data: one frame says both.
		if last := &q.frames[n-1]; last.StreamID == id && !last.Fin && last.Offset+uint64(len(last.Data)) == off {
			last.Fin = true
			bt.mu.Unlock()
			rs.kick()
			return nil
		}
	}
	start := len(q.data)
	q.data = append(q.data, b...)
	q.frames = append(q.frames, wire.DataFrame{StreamID: id, Offset: off, Data: q.data[start:len(q.data):len(q.data)], Fin: fin})
	bt.mu.Unlock()
	rs.kick()
	return nil
}

// kick writes the queue unless mu's holder is at it: that one drains the queue again after
// letting mu go (unlockAndDrain), so no frame is left behind.
func (rs *realStream) kick() {
	if rs.mu.TryLock() {
		rs.unlockAndDrain()
	}
}

// drainLocked writes the queued frames until the queue is empty. rs.mu is held.
func (rs *realStream) drainLocked() error {
	bt := &rs.batch
	for {
		bt.mu.Lock()
		if len(bt.queue.frames) == 0 {
			err := bt.err
			bt.mu.Unlock()
			return err
		}
		// Double buffering: writers queue into the spare while this batch is written.
		q := bt.queue
		bt.queue, bt.spare = bt.spare, batchQueue{}
		bt.queue.frames, bt.queue.data = bt.queue.frames[:0], bt.queue.data[:0]
		bt.cond.Broadcast()
		bt.mu.Unlock()
		err := rs.writeFrames(q.frames)
		clear(q.frames)
		bt.mu.Lock()
		bt.spare = q
		if err != nil && bt.err == nil {
			bt.err = err
		}
		bt.mu.Unlock()
	}
}

// unlockAndDrain writes every queued frame and releases mu; a frame queued meanwhile by a
// writer that could not take mu is written too. rs.mu is held.
func (rs *realStream) unlockAndDrain() {
	bt := &rs.batch
	for {
		rs.drainLocked()
		rs.closeIfIdle()
		if hook := testHookAfterIdleCheck.Load(); hook != nil {
			(*hook)(rs)
		}
		rs.mu.Unlock()
		bt.mu.Lock()
		pending := len(bt.queue.frames) > 0
		bt.mu.Unlock()
		// release may have asked for the close after closeIfIdle looked, and failed to take mu.
		pending = pending || (rs.closeWhenIdle.Load() && !rs.closed.Load())
		if !pending || !rs.mu.TryLock() {
			return // nothing left, or the new holder drains it (and closes qs)
		}
	}
}

// writeFrames writes frames in as few DataPackets as the peer's message size allows. rs.mu is
// held.
func (rs *realStream) writeFrames(frames []wire.DataFrame) error {
	max := rs.p.peer.maxMessageSize
	for len(frames) > 0 {
		rs.pkt.PacketID = rs.p.nextPacket.Add(1) - 1
		size := wire.DataPacketSize(&wire.DataPacket{PacketID: rs.pkt.PacketID})
		n := 0
		for n < len(frames) {
			// The first frame always fits: a small frame is far below any message size.
			if s := wire.PacketFrameSize(&frames[n]); n == 0 || size+s <= max {
				size += s
				n++
				continue
			}
			break
		}
		rs.pkt.Frames = append(rs.pkt.Frames[:0], frames[:n]...)
		frames = frames[n:]
		if rs.compressing() {
			if z := rs.z.compress(rs.pkt.Frames); z != nil {
				clear(rs.pkt.Frames)
				rs.pkt.Frames, rs.pkt.Compressed = rs.pkt.Frames[:0], z
			}
		}
		rs.buf = wire.AppendDataPacketMessage(rs.buf[:0], &rs.pkt)
		clear(rs.pkt.Frames)
		rs.pkt.Compressed = nil
		if _, err := rs.qs.Write(rs.buf); err != nil {
			return err
		}
		rs.p.stats.packetsSent.Add(1)
		rs.p.stats.bytesSent.Add(uint64(len(rs.buf)))
	}
	return nil
}

// compressing says whether this real stream's packets may be compressed (Config.Compression,
// on both sides of the path).
func (rs *realStream) compressing() bool {
	return rs.p.sess.conf.Compression && rs.p.peer.zstd
}

// writePacket writes one DataPacket holding one frame. rs.mu is held.
func (rs *realStream) writePacket(id, off uint64, b []byte, fin bool) error {
	if rs.compressing() {
		rs.one[0] = wire.DataFrame{StreamID: id, Offset: off, Data: b, Fin: fin}
		err := rs.writeFrames(rs.one[:])
		rs.one[0].Data = nil // do not keep the caller's buffer
		return err
	}
	pn := rs.p.nextPacket.Add(1) - 1
	var err error
	size := 0
	if len(b) >= directWriteMin && !fin {
		rs.buf = wire.AppendDataPacketHeader(rs.buf[:0], pn, id, off, len(b))
		size = len(rs.buf) + len(b)
		if _, err = rs.qs.Write(rs.buf); err == nil {
			_, err = rs.qs.Write(b)
		}
	} else {
		rs.pkt.PacketID = pn
		rs.pkt.Frames = append(rs.pkt.Frames[:0], wire.DataFrame{StreamID: id, Offset: off, Data: b, Fin: fin})
		rs.buf = wire.AppendDataPacketMessage(rs.buf[:0], &rs.pkt)
		rs.pkt.Frames[0].Data = nil // do not keep the caller's buffer
		size = len(rs.buf)
		_, err = rs.qs.Write(rs.buf)
	}
	if err == nil {
		rs.p.stats.packetsSent.Add(1)
		rs.p.stats.bytesSent.Add(uint64(size))
	}
	return err
}

// chanMutex is a mutex made of a channel with one slot (make(chanMutex, 1)), with
// sync.Mutex's Lock, TryLock and Unlock. realStream.mu is one because its holder writes to QUIC,
// which may wait for flow control or pacing, and others wait for it meanwhile: a goroutine
// blocked on a channel is durably blocked for testing/synctest, one blocked on a sync.Mutex is
// not, and would stop a bubble's fake clock for good (synctest_test.go).
type chanMutex chan struct{}

func (m chanMutex) Lock() { m <- struct{}{} }

func (m chanMutex) TryLock() bool {
	select {
	case m <- struct{}{}:
		return true
	default:
		return false
	}
}

func (m chanMutex) Unlock() {
	select {
	case <-m:
	default:
		panic("kwik: unlock of an unlocked chanMutex")
	}
}

// directWriteMin is the frame size from which writeFrame writes the caller's bytes directly.
const directWriteMin = 8 << 10

// testHookAfterIdleCheck, set by tests only, runs in unlockAndDrain between closeIfIdle and
// letting rs.mu go, as net/http's test hooks do: no production struct carries it.
var testHookAfterIdleCheck atomic.Pointer[func(*realStream)]
