// Package data is KWIK's data plane below the session: the pieces that turn
// DataFrames from several paths into one ordered byte stream and back. It
// holds reassembly today: RangeSet tracks which byte ranges of a logical
// stream have arrived, and RecvBuffer stores bytes received at arbitrary KWIK
// offsets (from any server, out of order, duplicated or overlapping, the first
// writer winning) in pooled blocks until an ordered Read consumes them. The
// path scheduler, packetizer, acknowledgement tracking and receive credit join
// it later. Nothing here locks, does I/O or starts goroutines: the session's
// owner goroutine (or the stream's lock) serialises access, and the caller
// enforces limits such as flow control, so this package only has to be
// correct on every input, hostile ones included.
package data
