package kwik

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// FanoutOptions tunes Fanout. The zero value is valid.
type FanoutOptions struct {
	// ChunkSize is the size of each chunk. 0 sizes chunks from the client's receive window so
	// that every source can have MaxInFlight chunks in flight within it (at most 256 KiB).
	ChunkSize int64
	// MaxInFlight is how many delegations each secondary may have outstanding: enough to cover
	// the round trips between a chunk's completion and the next assignment. 0 means 6.
	MaxInFlight int
	// Request makes the request a secondary receives for bytes [off, off+n) of the resource.
	// nil means FanoutRequest, which ServeFanout understands.
	Request func(off, n int64) []byte
}

// FanoutResult says who served what.
type FanoutResult struct {
	Bytes    map[string]int64   // by path ID: bytes delegated that the client received; "" is the primary
	Refilled int64              // bytes the primary refilled after failed delegations
	Failed   []*DelegationError // the delegations that did not deliver everything
}

// FanoutRequest is the default request for bytes [off, off+n): 16 bytes, big-endian.
func FanoutRequest(off, n int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(off)), uint64(n))
}

// ParseFanoutRequest reads a FanoutRequest.
func ParseFanoutRequest(b []byte) (off, n int64, err error) {
	if len(b) != 16 {
		return 0, 0, fmt.Errorf("kwik: fanout request of %d bytes, want 16", len(b))
	}
	off, n = int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:]))
	if off < 0 || n <= 0 || off+n < off {
		return 0, 0, errors.New("kwik: fanout request out of range")
	}
	return off, n, nil
}

type fanoutEvent struct {
	path string
	n    int64
	err  error
}

// Fanout serves size bytes of src on st (a primary's stream) from the primary and the
// secondaries on paths, in chunks: each next chunk goes to whichever source has room first
// (a secondary with fewer than MaxInFlight chunks outstanding; otherwise the primary writes it
// itself), so faster links take more chunks. A failed delegation's missing bytes are refilled
// by the primary at once, and that secondary gets no more chunks. Fanout closes st when all is
// sent and returns once every delegation is resolved. The stream may already carry bytes (a
// header, say): src's bytes follow them, and requests name offsets in src.
func Fanout(ctx context.Context, st Stream, src io.ReaderAt, size int64, paths []string, opts *FanoutOptions) (*FanoutResult, error) {
	var o FanoutOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 6
	}
	if o.Request == nil {
		o.Request = FanoutRequest
	}
	if o.ChunkSize <= 0 {
		window := int64(defaultStreamReceiveWindow)
		if s, ok := st.(*stream); ok {
			window = int64(s.path.peer.windowMax)
		}
		o.ChunkSize = min(max(window/int64(o.MaxInFlight*(len(paths)+1)+1), 16<<10), 256<<10)
	}
	res := &FanoutResult{Bytes: map[string]int64{}}
	var (
		mu       sync.Mutex // guards res from the watchers
		wg       sync.WaitGroup
		events   = make(chan fanoutEvent, len(paths)*o.MaxInFlight)
		inFlight = make(map[string]int, len(paths))
		// Per source, for its rate: first assignment and last completion (main loop only).
		firstSent = make(map[string]time.Time, len(paths))
		lastDone  = make(map[string]time.Time, len(paths))
		alive     = append([]string(nil), paths...)
		buf       = make([]byte, o.ChunkSize)
	)
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
	var firstErr error // guarded by mu
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
		events <- fanoutEvent{path: d.PathID, n: delivered, err: err}
	}
	handle := func(ev fanoutEvent) {
		inFlight[ev.path]--
		lastDone[ev.path] = time.Now()
		mu.Lock()
		res.Bytes[ev.path] += ev.n
		mu.Unlock()
		if ev.err != nil {
			alive = without(alive, ev.path)
		}
	}
	// Rates, for the end game: a source is given no chunk it would still be sending when the
	// others have finished everything, so a slow link does not hold up the tail.
	var ownBytes int64
	var ownTime time.Duration
	rate := func(p string) float64 { // bytes per second
		ownRate := float64(o.ChunkSize) / 0.05 // until measured: 40 Mbit/s
		if ownTime > 0 {
			ownRate = float64(ownBytes) / ownTime.Seconds()
		}
		if p == "" {
			return ownRate
		}
		mu.Lock()
		done := res.Bytes[p]
		mu.Unlock()
		if el := lastDone[p].Sub(firstSent[p]).Seconds(); done > 0 && el > 0 {
			return float64(done) / el
		}
		return ownRate
	}
	writeOwn := func(off, n int64) error {
		b := buf[:n]
		if _, err := io.ReadFull(io.NewSectionReader(src, off, n), b); err != nil {
			return fmt.Errorf("kwik: Fanout: reading the resource: %w", err)
		}
		t0 := time.Now()
		if _, err := st.Write(b); err != nil {
			return err
		}
		ownTime += time.Since(t0)
		ownBytes += n
		mu.Lock()
		res.Bytes[""] += n
		mu.Unlock()
		return nil
	}

	var off int64
	var err error
	for off < size && err == nil && failed() == nil {
		// Take in what has finished, without waiting.
		for drained := false; !drained; {
			select {
			case ev := <-events:
				handle(ev)
			default:
				drained = true
			}
		}
		n := min(o.ChunkSize, size-off)
		total := rate("")
		for _, p := range alive {
			total += rate(p)
		}
		rest := float64(size-off-n) / total // seconds for everyone to send the rest
		var to string
		for _, p := range alive {
			// Only a clearly slower source is held back: estimates are rough, and holding
			// back an equal one starves it.
			finish := float64(int64(inFlight[p])*o.ChunkSize+n) / rate(p)
			slow := rate(p) < 0.75*rate("") && finish > rest+float64(n)/rate("")
			// Keep about 0.6 s of a source's measured rate in flight (at least 2 chunks):
			// a slow link's queue then drains as fast as the others'.
			limit := o.MaxInFlight
			if _, measured := lastDone[p]; measured {
				limit = min(limit, max(2, int(rate(p)*0.6/float64(o.ChunkSize))))
			}
			if inFlight[p] < limit && !slow &&
				(to == "" || inFlight[p] < inFlight[to]) {
				to = p
			}
		}
		if to == "" {
			// The primary's own pieces are a quarter chunk: while it writes, nobody is given
			// work, so it looks for a free secondary often.
			n = min(n, max(o.ChunkSize/4, 16<<10))
			err = writeOwn(off, n)
			off += n
			continue
		}
		d, derr := st.Delegate(to, n, o.Request(off, n))
		if derr != nil {
			if errors.Is(derr, ErrPathDead) || errors.Is(derr, ErrPathNotFound) {
				alive = without(alive, to)
				continue
			}
			err = derr
			break
		}
		inFlight[to]++
		if firstSent[to].IsZero() {
			firstSent[to] = time.Now()
		}
		wg.Add(1)
		go watch(d, off)
		off += n
	}
	if err == nil {
		err = st.Close()
	}
	go func() { wg.Wait(); close(events) }()
	for ev := range events {
		handle(ev)
	}
	if err == nil {
		err = failed()
	}
	return res, err
}

// ServeFanout answers, on a secondary, every delegation made by Fanout with the default
// request, from src, until the session ends or ctx is canceled.
func ServeFanout(ctx context.Context, sess Session, src io.ReaderAt) error {
	for {
		st, err := sess.AcceptStream(ctx)
		if err != nil {
			return err
		}
		go func() {
			req, err := io.ReadAll(io.LimitReader(st, 64))
			if err != nil {
				st.Close()
				return
			}
			off, n, err := ParseFanoutRequest(req)
			if err != nil {
				st.Close()
				return
			}
			// Stream the range in pieces: bounded memory, and the first bytes leave at once.
			// A short read (a replica smaller than asked) ends the range early: Close then
			// tells the primary exactly what is missing, and it refills.
			io.Copy(st, io.NewSectionReader(src, off, n))
			st.Close()
		}()
	}
}
