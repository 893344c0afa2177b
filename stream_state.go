package kwik

// A logical stream's lifecycle, as named states (docs/ARCHITECTURE.md, "A logical stream's
// lifecycle"). Each half moves only forward, through methods that report whether a transition
// happened, so that its consequences (give the loan back, tell the streamsMap) run once.
// The states are plain values guarded by their half's lock; they are tested without a
// session (stream_state_test.go).

// recvState is where a receive half is.
type recvState uint8

const (
	// recvOpen: the half takes data.
	recvOpen recvState = iota
	// recvEnded: it takes no more (Read reached the final size, the peer reset it, or
	// CancelRead): its loan was given back and its buffer released.
	recvEnded
	// recvSeen: the application has seen the end too (io.EOF, the reset error, or
	// CancelRead): the half is complete, and the streamsMap was told (finished).
	recvSeen
)

// ended says whether the half takes no more data.
func (st recvState) ended() bool { return st >= recvEnded }

// end ends an open half, and reports whether it was open: the caller then gives its loan
// back.
func (st *recvState) end() bool {
	if *st != recvOpen {
		return false
	}
	*st = recvEnded
	return true
}

// see records that the application has seen the half's end, and reports whether it had not
// yet: the caller then tells the streamsMap. The half has ended by then (the application only
// sees an end that happened); should it not have, it ends too.
func (st *recvState) see() bool {
	if *st == recvSeen {
		return false
	}
	*st = recvSeen
	return true
}

// sendState is where a logical stream's send half is. Why it failed, if it did (CancelWrite,
// the peer's StopSending), is sendCredit.err, set before the half ends; every check of the
// state comes after a check of err.
type sendState uint8

const (
	// sendOpen: Write may send.
	sendOpen sendState = iota
	// sendClosing: Close was called: Write fails with ErrWriteAfterClose, the fin is being
	// written, and a cancel changes nothing. WriteAt may still fill owed ranges.
	sendClosing
	// sendEnded: the fin is written, or the reset queued (err is set): the real stream went
	// back to the pool and the stream's context is canceled (endSend).
	sendEnded
)

// closed says whether Close was called or the half ended: no more Write.
func (st sendState) closed() bool { return st != sendOpen }

// close records Close, and reports whether the half was open: the caller then writes the fin.
func (st *sendState) close() bool {
	if *st != sendOpen {
		return false
	}
	*st = sendClosing
	return true
}

// end ends the half, and reports whether it had not ended: the caller then gives the real
// stream back and cancels the context.
func (st *sendState) end() bool {
	if *st == sendEnded {
		return false
	}
	*st = sendEnded
	return true
}

// sendCompletion is how far a send half is from complete: the application must have seen its
// end (Close, CancelWrite, or the error from Write), and, on the primary, its delegations
// must owe nothing (all resolved, every failed suffix refilled) unless the half failed.
type sendCompletion uint8

const (
	// sendInUse: the application has not seen the half's end.
	sendInUse sendCompletion = iota
	// sendSettling: it has; the half waits for its delegations to be resolved and refilled
	// (delegationResolved and writeAt try again).
	sendSettling
	// sendComplete: the half is complete, and the streamsMap was told (finished).
	sendComplete
)

// wanted says whether the application has seen the half's end.
func (c sendCompletion) wanted() bool { return c != sendInUse }

// complete records that the application has seen the half's end, and reports whether the
// half completes now, settled saying that nothing is owed: true once, and the caller then
// tells the streamsMap.
func (c *sendCompletion) complete(settled bool) bool {
	switch {
	case *c == sendComplete:
		return false
	case !settled:
		*c = sendSettling
		return false
	}
	*c = sendComplete
	return true
}
