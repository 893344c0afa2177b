package kwik

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// FanoutOptions tunes Fanout. The zero value is valid, and the best choice on most links.
type FanoutOptions struct {
	// ChunkSize fixes the size of the pieces delegated to secondaries and of the primary's
	// first piece, and has every secondary with room take pieces whatever the resource's size
	// and the secondaries' speeds. 0 sizes each piece from its secondary's measured rate and
	// delegation latency (64 KiB to 1 MiB), leaves a resource too small for delegation to pay
	// off to the primary alone, gives a slow secondary no piece it would deliver after the
	// others have sent everything, and has the primary send again, at the end, the pieces a
	// secondary slower than estimated would deliver last.
	ChunkSize int64
	// MaxInFlight caps the delegations a secondary may have outstanding. 0 means no fixed
	// cap: each secondary keeps twice its measured rate times its delegation latency (plus a
	// round) outstanding, so that its pipe stays full.
	MaxInFlight int
	// Joining, if not nil, gives the IDs of secondary paths that join while Fanout runs: each
	// takes pieces from its arrival on, as those of paths do. Fanout stops receiving once
	// everything is assigned; it never closes the channel. A path still joining
	// (Session.JoinPath), here or in paths, takes pieces at once: the client holds them until
	// it has joined (a round trip sooner than after AddPath returns), and the primary sends
	// them again if the join is late or fails. So a response that should not wait for its
	// secondaries (kwikhttp's first large one in a session) passes them, joined or not, in
	// paths.
	Joining <-chan string
	// Request makes the request a secondary receives for bytes [off, off+n) of the resource.
	// nil means FanoutRequest, which ServeFanout understands.
	Request func(off, n int64) []byte
	// NoDigests turns off the content digests of delegated pieces. By default the primary
	// reads each piece it delegates from src and gives the client the SHA-256 of each 64 KiB
	// block of it: the client reads a secondary's bytes only once they match, and a stale
	// or lying replica's piece fails (errors.Is ErrDigestMismatch) and is refilled by the
	// primary, so the reader never sees a wrong byte. It costs the primary a read and a hash
	// of every delegated byte and the client a hash, 32 bytes of DelegateRange per block,
	// and no more round trips (measured on loopback in the README: BenchmarkFanoutDigests).
	// Turn them off only when src is not the content the secondaries should serve.
	NoDigests bool
}

// FanoutResult says who served what.
type FanoutResult struct {
	Bytes    map[string]int64 // by path ID: bytes delegated that the client received; "" is the primary
	Refilled int64            // bytes the primary refilled after failed delegations
	// Duplicated is what the primary sent again of pieces slow secondaries still owed at the
	// end (the client keeps the first copy; Bytes counts them as the secondary's).
	Duplicated int64
	// HandedBack is what the primary had queued for itself and gave, not yet written, to a
	// secondary that would deliver it sooner at the end (Bytes counts it as the secondary's).
	HandedBack int64
	Failed     []*DelegationError // the delegations that did not deliver everything (errors.Is ErrDigestMismatch: other bytes than src's)
}

// FanoutRequest is the default request for bytes [off, off+n): 16 bytes, big-endian.
func FanoutRequest(off, n int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(off)), uint64(n))
}

// ParseFanoutRequest reads a FanoutRequest. A request of another length or out of range is an
// error that errors.Is matches with ErrInvalidArgument.
func ParseFanoutRequest(b []byte) (off, n int64, err error) {
	if len(b) != 16 {
		return 0, 0, invalidArgument(fmt.Sprintf("kwik: fanout request of %d bytes, want 16", len(b)))
	}
	off, n = int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:]))
	if off < 0 || n <= 0 || off+n < off {
		return 0, 0, invalidArgument("kwik: fanout request out of range")
	}
	return off, n, nil
}

// fanoutEvent is a resolved delegation, or ("" path) a piece the primary's own writer wrote.
type fanoutEvent struct {
	path     string
	off      int64 // where the piece starts in the resource
	n        int64 // bytes delivered
	err      error
	at       time.Time
	took     time.Duration // the primary's piece: the time its write took
	credited bool          // the primary's piece: it had the client's credit when written
	dup      bool          // the primary's piece: a secondary's, sent again
	queued   int64         // a piece sent again: its length, as the scheduler queued it
	received fanoutCount   // a delegation: what the client had received on its path (Delegation.received)
}

// Fanout serves size bytes of src on st (a primary's stream) from the primary and the
// secondaries on paths, piece by piece, in order: the primary writes the first piece itself
// (the first byte leaves at once); then each source, the primary included, takes the next
// piece when its queue runs short of work (the primary's pieces are written by a goroutine of
// Fanout's own), so every source stays busy and faster ones take more (fanoutScheduler has
// the rules). A small resource is served by the primary alone. A failed delegation's missing
// bytes are refilled by the primary at once, and that secondary gets no more pieces. Fanout
// closes st once everything is assigned; the primary, idle, then sends again the pieces a
// slow secondary would deliver last (the client keeps the first copy, and tells the secondary
// to stop once it has read everything). Fanout returns once every delegation is resolved. The
// stream may already carry bytes (a header, say): src's bytes follow them, and requests name
// offsets in src.
func Fanout(ctx context.Context, st Stream, src io.ReaderAt, size int64, paths []string, opts *FanoutOptions) (*FanoutResult, error) {
	var o FanoutOptions
	if opts != nil {
		o = *opts
	}
	if o.Request == nil {
		o.Request = FanoutRequest
	}
	var rtt time.Duration
	ks, _ := st.(*stream)
	var base int64   // the stream's offset of the resource's first byte
	var credit int64 // what the client's credit lets the primary send now
	if ks != nil {
		rtt = ks.path.smoothedRTT()
		ks.send.mu.Lock()
		base = int64(ks.send.offset)
		credit = int64(ks.send.maxOffset) - base
		ks.send.mu.Unlock()
	}
	sched := newFanoutScheduler(size, rtt, paths, &o)
	sched.first = min(credit, fanoutMaxChunk) &^ (16<<10 - 1)
	var memo *fanoutMemory
	var recalled map[string]fanoutRecall
	if ks != nil && ks.path.sess != nil && o.ChunkSize == 0 {
		memo = &ks.path.sess.fanoutMemo
		recalled = memo.load()
		sched.recall(recalled, time.Now())
	}
	// Paths still joining (Session.JoinPath) take pieces at once, which the client holds
	// until the join ends; the scheduler counts them as given from then on.
	type joiningPath struct {
		id  string
		end *joinEnd
	}
	var joins []joiningPath
	watchJoin := func(id string) {
		if ks == nil || ks.sess == nil {
			return
		}
		if j := ks.sess.joinOf(id); j != nil {
			sched.joining(id, time.Now())
			joins = append(joins, joiningPath{id, j})
		}
	}
	checkJoins := func() {
		for i := 0; i < len(joins); {
			select {
			case <-joins[i].end.done:
				sched.joined(joins[i].id, joins[i].end.at) // when it ended, not when the loop looks
				joins = slices.Delete(joins, i, i+1)
			default:
				i++
			}
		}
	}
	for _, id := range paths {
		watchJoin(id)
	}
	joining := o.Joining
	join := func(id string, ok bool) {
		if !ok {
			joining = nil
		} else if src := sched.join(id); src != nil {
			src.recall(recalled, time.Now())
			watchJoin(id)
		}
	}
	takeJoins := func() {
		for joining != nil {
			select {
			case id, ok := <-joining:
				join(id, ok)
			default:
				return
			}
		}
	}
	res := &FanoutResult{Bytes: map[string]int64{}}
	var (
		mu       sync.Mutex // guards res and firstErr from the watchers
		firstErr error
		wg       sync.WaitGroup
		events   = make(chan fanoutEvent, 64)
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return firstErr
	}
	// refill writes what a failed delegation left undelivered. Stream offsets and the
	// resource's differ when the stream carried something before Fanout (a header): srcOff is
	// where the delegation's range starts in src.
	refill := func(d *Delegation, srcOff int64, de *DelegationError) error {
		b := make([]byte, de.Remaining)
		if _, err := io.ReadFull(io.NewSectionReader(src, srcOff+de.Offset-d.Offset, de.Remaining), b); err != nil {
			return fmt.Errorf("kwik: Fanout: reading the refill: %w", err)
		}
		_, err := st.WriteAt(b, de.Offset)
		mu.Lock()
		res.Refilled += de.Remaining
		res.Failed = append(res.Failed, de)
		mu.Unlock()
		return err
	}
	watch := func(d *Delegation, srcOff int64) {
		defer wg.Done()
		err := d.Wait(ctx)
		var de *DelegationError
		if errors.As(err, &de) {
			// The reader cannot pass the gap: fill it now, whatever the main loop is doing.
			if rerr := refill(d, srcOff, de); rerr != nil {
				fail(rerr)
			}
		} else if err != nil {
			fail(err)
		}
		delivered := d.Length
		if de != nil {
			delivered -= de.Remaining
		}
		var received fanoutCount
		select {
		case <-d.done: // not if Wait gave up on ctx: d.received may be being set
			received = d.received
		default:
		}
		events <- fanoutEvent{path: d.PathID, off: srcOff, n: delivered, err: err, at: time.Now(), received: received}
	}
	handle := func(ev fanoutEvent) {
		if ev.dup {
			// All of it is off the queue, even if the write failed part way (the session or
			// the stream ended): a duplicate is a spare copy, and Fanout must not wait for it.
			sched.duplicated(ev.queued)
			mu.Lock()
			res.Duplicated += ev.n
			mu.Unlock()
			return
		}
		if ev.path == "" {
			sched.wrote(ev.n, ev.took, ev.credited && ev.err == nil)
		} else {
			sched.resolved(ev.path, ev.off, ev.n, ev.err != nil, ev.at, ev.received)
		}
		mu.Lock()
		res.Bytes[ev.path] += ev.n
		mu.Unlock()
	}
	// writePiece writes [off, off+n) of src at stream offset at (-1: with Write, at the
	// stream's end) through b, in parts of len(b), and returns the event that reports it.
	writePiece := func(b []byte, off, n, at int64, dup bool) fanoutEvent {
		ev := fanoutEvent{off: off, credited: true, dup: dup}
		for ev.n < n {
			part := b[:min(n-ev.n, int64(len(b)))]
			if _, err := io.ReadFull(io.NewSectionReader(src, off+ev.n, int64(len(part))), part); err != nil {
				ev.err = fmt.Errorf("kwik: Fanout: reading the resource: %w", err)
				return ev
			}
			if ks != nil {
				ks.send.mu.Lock()
				ev.credited = ev.credited && int64(ks.send.maxOffset) >= base+off+n
				ks.send.mu.Unlock()
			}
			t0 := time.Now()
			var err error
			switch {
			case at < 0:
				_, err = st.Write(part)
			case dup:
				_, err = ks.duplicate(part, at+ev.n)
			default:
				_, err = ks.WriteAt(part, at+ev.n)
			}
			ev.took += time.Since(t0)
			if err != nil {
				ev.err = err
				return ev
			}
			ev.n += int64(len(part))
		}
		return ev
	}
	// The primary's own pieces: with the stream itself, a writer of their own keeps the
	// primary's pipe full while this loop hands pieces to the secondaries (each piece is
	// reserved, so delegations may be made past it before it is written); otherwise the loop
	// writes them in turn.
	// A piece the writer has not started may go to a secondary instead (handBack): the writer
	// takes a piece by moving its state from queued to writing, handBack by moving it to
	// handed.
	type ownPiece struct {
		off, n, at int64
		state      atomic.Int32
	}
	const (
		pieceQueued = iota
		pieceWriting
		pieceHanded
	)
	var own chan *ownPiece
	var ownQ []*ownPiece // the loop's: the pieces given to the writer and not yet taken, in order
	pruneOwn := func() {
		for len(ownQ) > 0 && ownQ[0].state.Load() != pieceQueued {
			ownQ = ownQ[1:]
		}
	}
	if ks != nil {
		own = make(chan *ownPiece, fanoutMaxOwnPieces)
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, fanoutOwnPiece)
			for p := range own {
				if failed() != nil || !p.state.CompareAndSwap(pieceQueued, pieceWriting) {
					continue // drain: the loop has stopped; or the piece went to a secondary
				}
				ev := writePiece(b, p.off, p.n, p.at, false)
				if ev.err != nil {
					fail(ev.err)
				}
				events <- ev // wakes the loop, whatever happened
			}
		}()
	}
	buf := make([]byte, fanoutOwnPiece)
	var digestBuf []byte // reads src for digests, made at first use
	// dup has the primary send again a piece a secondary owes (fanoutScheduler.duplicate), on
	// a goroutine of its own: the primary's own queue, which may wait for credit behind that
	// very piece, does not hold it up.
	dup := func(now time.Time) bool {
		if ks == nil {
			return false
		}
		off, n, ok := sched.duplicate(now)
		if !ok {
			return false
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := writePiece(make([]byte, min(n, fanoutOwnPiece)), off, n, base+off, true)
			ev.queued = n
			events <- ev
		}()
		return true
	}
	// delegatePiece delegates bytes [off, off+n) of src to path, at stream offset at (-1: at the
	// stream's end), with their digests unless o.NoDigests; it returns the length delegated
	// (delegateDigested may shorten it).
	delegatePiece := func(to string, at, off, n int64) (*Delegation, int64, error) {
		req := o.Request(off, n)
		if ks != nil && !o.NoDigests {
			return delegateDigested(ks, to, at, off, n, req, src, &o, &digestBuf)
		}
		if at < 0 {
			d, err := st.Delegate(to, n, req)
			return d, n, err
		}
		d, err := ks.delegate(to, at, n, req, nil, 0)
		return d, n, err
	}
	// handBack gives the last pieces of the primary's queue that its writer has not started
	// to a secondary that would deliver them sooner (fanoutScheduler.handBack), as one range
	// of the stream. What the secondary does not get after all (its path died, or its
	// digests cover less) the primary writes on a writer of its own.
	handBackOff := false // a delegation refused for another reason than its path: no more
	handBack := func(now time.Time) bool {
		if own == nil || handBackOff {
			return false
		}
		to, k, ok := sched.handBack(now)
		if !ok {
			return false
		}
		pruneOwn()
		var n int64
		i := len(ownQ)
		for ; i > 0; i-- {
			p := ownQ[i-1]
			if n+p.n > k || i < len(ownQ) && (p.at+p.n != ownQ[i].at || p.off+p.n != ownQ[i].off) {
				break
			}
			if !p.state.CompareAndSwap(pieceQueued, pieceHanded) {
				break // the writer took it: it and those before it are the primary's
			}
			n += p.n
		}
		if n == 0 {
			return false
		}
		off, at := ownQ[i].off, ownQ[i].at
		ownQ = ownQ[:i]
		d, given, derr := delegatePiece(to, at, off, n)
		if derr != nil {
			given = 0
			if errors.Is(derr, ErrPathDead) || errors.Is(derr, ErrPathNotFound) {
				sched.kill(to)
			} else {
				handBackOff = true // the secondary's bounds, say: the same would come again
			}
		} else {
			sched.handedBack(to, off, given, now)
			mu.Lock()
			res.HandedBack += given
			mu.Unlock()
			d.Done()
			wg.Add(1)
			go watch(d, off)
		}
		if given < n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ev := writePiece(make([]byte, fanoutOwnPiece), off+given, n-given, at+given, false)
				if ev.err != nil {
					fail(ev.err)
				}
				ev.credited = false // beside the own writer: its time does not measure the path
				events <- ev
			}()
		}
		return true
	}

	var err error
	closed := false
	tick := time.NewTicker(fanoutOverdue / 2)
	defer tick.Stop()
	for err == nil && failed() == nil {
		// Take in what has finished, without waiting.
		for drained := false; !drained; {
			select {
			case ev := <-events:
				handle(ev)
			default:
				drained = true
			}
		}
		takeJoins()
		checkJoins()
		off := sched.off
		if ks != nil {
			st := &ks.path.stats
			if n := st.packetsSent.Load(); n > 0 {
				sched.pathDelivered(time.Now(), int64(st.packetsAcked.Load()*st.bytesSent.Load()/n))
			}
			if c := ks.path.conn; c != nil {
				qs := c.ConnectionStats()
				sched.pathRTT(qs.SmoothedRTT, qs.MinRTT)
			}
		}
		dup(time.Now()) // a piece overdue from a secondary, sent again at once
		to, n, ok := sched.next(time.Now())
		if ok && n == 0 {
			// Everything is assigned: the client learns the final size now. The primary then
			// sends again what a slow secondary would deliver last, until all is resolved.
			if !closed {
				closed = true
				joining = nil // no more pieces to give
				if err = st.Close(); err != nil {
					break
				}
			}
			if dup(time.Now()) || handBack(time.Now()) {
				continue
			}
			if !sched.busy() {
				break
			}
			ok = false
		}
		if !ok {
			// Every source has enough to do: wait for a piece written or a delegation resolved.
			// Wake up now and then while delegations are under way: one may become
			// overdue (duplicate) without any event; and as a join ends (checkJoins: its path may
			// then take more than what the client held for it).
			var joined <-chan struct{}
			if len(joins) > 0 {
				joined = joins[0].end.done
			}
			select {
			case ev := <-events:
				handle(ev)
			case id, ok := <-joining:
				join(id, ok)
			case <-joined:
			case <-tick.C:
			}
			continue
		}
		if to == "" {
			if own == nil {
				sched.reserved(n)
				ev := writePiece(buf, off, n, -1, false)
				handle(ev)
				err = ev.err
				continue
			}
			at, rerr := ks.reserve(n)
			if rerr != nil {
				err = rerr
				break
			}
			sched.reserved(n)
			p := &ownPiece{off: off, n: n, at: at}
			pruneOwn()
			ownQ = append(ownQ, p)
			own <- p // never blocks: ownTarget stays below the queue's size
			continue
		}
		d, n, derr := delegatePiece(to, -1, off, n)
		if derr != nil {
			if errors.Is(derr, ErrPathDead) || errors.Is(derr, ErrPathNotFound) {
				sched.kill(to)
				continue
			}
			err = derr
			break
		}
		sched.delegated(to, n, time.Now())
		d.Done() // its watcher refills a failure: the own writer's WriteAts are not told of it
		wg.Add(1)
		go watch(d, off)
	}
	if own != nil {
		close(own)
	}
	if err == nil && !closed {
		err = st.Close()
	}
	go func() { wg.Wait(); close(events) }()
	for ev := range events {
		handle(ev)
	}
	if err == nil {
		err = failed()
	}
	if memo != nil {
		memo.store(sched.measured(time.Now()))
	}
	return res, err
}

// delegateDigested delegates bytes [off, off+n) of src, which the stream's offsets hold from
// at (-1: from ks's current offset; see stream.delegate), to path with the digests of their
// blocks. A piece too long for its digests to fit in one message is shortened to what fits; it
// returns the length delegated. A request that leaves no room for digests is delegated without
// them.
func delegateDigested(ks *stream, path string, at, off, n int64, req []byte, src io.ReaderAt, o *FanoutOptions, buf *[]byte) (*Delegation, int64, error) {
	if m := ks.maxDigestedLength(len(req)); m < n && m > 0 {
		n = m
		req = o.Request(off, n)
	}
	block, ok := ks.digestBlockFor(n, len(req))
	if !ok {
		d, err := ks.delegate(path, at, n, req, nil, 0)
		return d, n, err
	}
	if *buf == nil {
		*buf = make([]byte, digestBlock)
	}
	digests, err := appendDigests(make([]byte, 0, (n+block-1)/block*sha256.Size), src, off, n, block, *buf)
	if err != nil {
		return nil, n, err
	}
	d, err := ks.delegate(path, at, n, req, digests, block)
	return d, n, err
}

// ServeFanout answers, on a secondary, every delegation made by Fanout with the default
// request, from src, until the session ends or ctx is canceled. Its work is bounded
// (ServeFanoutWorkers, ServeFanoutIdle); on a session whose Role is not RoleSecondary it
// returns an error at once.
func ServeFanout(ctx context.Context, sess Session, src io.ReaderAt) error {
	return serveFanout(ctx, sess, ServeFanoutWorkers, func(st Stream) { serveFanoutRange(st, src) })
}
