package kwik

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/kwik-go/kwik/internal/wire/pb"
)

// Content digests of delegated ranges (docs/PROTOCOL.md, sections 14 and 15). Secondaries are
// trusted for liveness, not content: a stale replica of the same size, or a lying one, would
// otherwise put its bytes into the client's stream. The primary, which has the data (Fanout
// reads it from its own source), gives the client in DelegateRange the SHA-256 of each block
// of the range (digestBlock bytes, the last one shorter). The client:
//
//   - keeps a range's bytes in the stream's receive buffer as usual, whoever sent them (the
//     secondary, or the primary sending a piece again), but lets the reader read only up to
//     the range's first block not verified yet (heldFromLocked);
//   - hashes each block once all of it is in the buffer, in order (verifyLocked): a match
//     releases it to the reader; a mismatch fails the delegation with KWIK_DIGEST_MISMATCH,
//     its missing offset the block's start: the client discards every unverified byte of the
//     range from the buffer (which otherwise keeps the first copy it got), tells the secondary
//     to stop and drops what it still sends, and the primary refills the range from there
//     with WriteAt, whose bytes then stand unchecked, as the primary's own bytes always do;
//   - makes sure the credit covers the block the reader waits for (flowcontrol Receiver.Cover):
//     a block is at most the stream's initial window, so held bytes stay within the stream's
//     usual memory bound, and a reader waiting for a whole block never waits for credit that
//     only its reading would bring.
//
// Any failure of a digest-carrying delegation (a dead path, a secondary that closed short, a
// progress deadline) has the same missing offset: the first byte not verified, and the
// unverified rest is discarded, so that what the primary refills is what the reader gets.
//
// Blocks rather than one digest for the whole range: the reader gets a range block by block,
// as it arrives, instead of holding all of it back (a 1 MiB piece at 40 Mbit/s is 200 ms);
// the credit a reader waiting at a block needs is a block, not the range; and a mismatch
// costs a refill from the bad block on, not from the range's start. The digests cost 32
// bytes per block in DelegateRange (0.05% at 64 KiB).
//
// The digests are not forwarded to the secondary and not part of the delegation's MAC: that
// MAC protects the secondary from the client, which cannot check it (it has no key); the
// client receives DelegateRange from the primary over the primary path's TLS, which is what
// authenticates the digests to it.

// digestBlock is the block size the Go primary digests delegated ranges in.
const digestBlock = 64 << 10

// digestsOverhead is what digests add to a DelegateRange, field tags and lengths included.
func digestsOverhead(digests []byte) int {
	if len(digests) == 0 {
		return 0
	}
	return len(digests) + 16
}

// digestsValid says whether digests are the SHA-256 digests of the blocks of a range of
// length bytes in blocks of block bytes, within window (the client's initial stream window).
func digestsValid(length uint64, digests []byte, block, window uint64) bool {
	if len(digests) == 0 {
		return block == 0
	}
	return block > 0 && block <= window && len(digests)%sha256.Size == 0 &&
		uint64(len(digests)/sha256.Size) == length/block+min(length%block, 1)
}

// digestBlockFor returns the block size to digest a range of length bytes in, with a request
// of reqLen bytes: digestBlock, or larger so that the digests fit the client's messages, and
// never above the client's initial stream window; ok is false if no size fits. (primary)
func (s *stream) digestBlockFor(length int64, reqLen int) (block int64, ok bool) {
	peer := s.path.peer
	window := int64(min(peer.streamWindow, math.MaxInt32))
	room := (maxDelegationRequest(peer.maxMessageSize) - reqLen - digestsOverhead([]byte{0})) / sha256.Size
	if length <= 0 || room <= 0 {
		return 0, false
	}
	block = min(int64(digestBlock), window)
	if blocks := (length + block - 1) / block; blocks > int64(room) {
		block = (length + int64(room) - 1) / int64(room)
	}
	return block, block <= window
}

// maxDigestedLength is the longest range digestBlockFor can digest with a request of reqLen
// bytes. (primary)
func (s *stream) maxDigestedLength(reqLen int) int64 {
	peer := s.path.peer
	room := (maxDelegationRequest(peer.maxMessageSize) - reqLen - digestsOverhead([]byte{0})) / sha256.Size
	return max(int64(room), 0) * int64(min(peer.streamWindow, math.MaxInt32))
}

// appendDigests appends the SHA-256 of each block of bytes [off, off+n) of src to dst, reading
// through buf.
func appendDigests(dst []byte, src io.ReaderAt, off, n, block int64, buf []byte) ([]byte, error) {
	h := sha256.New()
	for done := int64(0); done < n; {
		h.Reset()
		end := min(done+block, n)
		for done < end {
			part := buf[:min(end-done, int64(len(buf)))]
			if k, err := src.ReadAt(part, off+done); k < len(part) {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return dst, fmt.Errorf("kwik: Fanout: reading the resource to digest it: %w", err)
			}
			h.Write(part)
			done += int64(len(part))
		}
		dst = h.Sum(dst)
	}
	return dst, nil
}

// ---- client ----

// heldFromLocked returns the first byte the reader may not read yet: the first unverified
// byte of a digest-carrying delegation, and the end of its block; ok is false if nothing is
// held. s.recv.mu is held.
func (s *stream) heldFromLocked() (from, blockEnd uint64, ok bool) {
	for _, d := range s.recv.delegs {
		if d.digests != nil && d.state == delegationActive && d.verified < d.end && (!ok || d.verified < from) {
			from, blockEnd, ok = d.verified, min(d.verified+d.block, d.end), true
		}
	}
	return from, blockEnd, ok
}

// verifyLocked checks the blocks of the digest-carrying delegations that bytes [off, end),
// just stored, may have completed, and appends to bad those one of whose blocks did not match
// (the caller fails them with digestMismatchLocked). s.recv.mu is held.
func (s *stream) verifyLocked(bad []*delegationRecord, off, end uint64) []*delegationRecord {
	for _, d := range s.recv.delegs {
		if d.digests == nil || d.state != delegationActive || end <= d.verified || off >= d.end {
			continue
		}
		if !d.verifyLocked() {
			bad = append(bad, d)
		}
	}
	return bad
}

// verifyLocked hashes, in order from the first unverified one, each block of d that the buffer
// holds whole, and advances d.verified past those that match. It returns false at the first
// that does not. d.st.recv.mu is held.
func (d *delegationRecord) verifyLocked() bool {
	st := d.st
	for d.verified < d.end {
		end := min(d.verified+d.block, d.end)
		if !st.recv.buf.Received().ContainsRange(d.verified, end) {
			return true
		}
		if st.recv.hash == nil {
			st.recv.hash = sha256.New()
		}
		h := st.recv.hash
		h.Reset()
		if !st.recv.buf.Peek(d.verified, end, func(p []byte) { h.Write(p) }) {
			return true // below the read offset: impossible while held, and nothing to check
		}
		i := (d.verified - d.off) / d.block * sha256.Size
		var sum [sha256.Size]byte
		if !bytes.Equal(h.Sum(sum[:0]), d.digests[i:i+sha256.Size]) {
			return false
		}
		d.verified = end
	}
	return true
}

// discardLocked forgets the buffered bytes of [from, to), which the reader has not read: the
// next bytes written there replace them. s.recv.mu is held.
func (s *stream) discardLocked(from, to uint64) {
	blocks := s.recv.buf.BufferedBlocks()
	s.recv.buf.Discard(from, to)
	s.sess.credit.held(s.recv.buf.BufferedBlocks() - blocks)
}

// digestMismatchLocked fails d, one of whose blocks did not match its digest: its unverified
// bytes are discarded (failLocked), and what its secondary still sends is dropped. It returns
// the first byte the primary must refill. The caller then calls digestMismatch. d.st.recv.mu is
// held.
func (sess *session) digestMismatchLocked(d *delegationRecord) (missing uint64) {
	missing, _ = d.failLocked()
	sess.stopLocked(d)
	return missing
}

// digestMismatch tells the primary (DelegationStatus, KWIK_DIGEST_MISMATCH) and the secondary
// (StopSending naming the delegation) of d's failure at missing.
func (sess *session) digestMismatch(d *delegationRecord, missing uint64) {
	reason := fmt.Sprintf("the block at offset %d does not match the primary's digest", missing)
	sess.log.Warn("kwik: delegated bytes do not match their digest", "path", d.path.id, "stream", d.st.id, "offset", missing)
	sess.reportOutcome(d, delegationFailed, missing, CodeDigestMismatch, reason)
	d.path.ctrl.queue(&pb.ControlFrame{Payload: &pb.ControlFrame_StopSending{StopSending: &pb.StopSending{
		LogicalStreamId: d.st.id, DelegationIds: []uint64{d.id},
	}}})
}

// stopLocked remembers d, just failed while its secondary may still be writing it, so that
// its late bytes are dropped rather than cutting the path off (within maxStoppedDelegations).
// d.st.recv.mu is held.
func (sess *session) stopLocked(d *delegationRecord) {
	st := d.st
	sess.clientDelegs.mu.Lock()
	defer sess.clientDelegs.mu.Unlock()
	if len(sess.clientDelegs.stopped) >= maxStoppedDelegations {
		// Forget those of streams that take no more data (their late bytes are dropped
		// anyway): the others' secondaries ignored the stop.
		for id, o := range sess.clientDelegs.stopped {
			if o.st != st && o.st.recv.mu.TryLock() {
				if o.st.recv.state.ended() {
					delete(sess.clientDelegs.stopped, id)
				}
				o.st.recv.mu.Unlock()
			}
		}
	}
	if len(sess.clientDelegs.stopped) < maxStoppedDelegations {
		sess.clientDelegs.stopped[d.id] = d
		st.recv.stopped = append(slices.Clip(st.recv.stopped), d) // copy on write, as delegs
	}
}
