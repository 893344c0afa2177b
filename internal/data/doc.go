// Package data is KWIK's reassembly: the pieces that turn DataFrames from several paths into
// one ordered byte stream. RangeSet is a set of uint64 ranges (the bytes of a stream or of a
// delegation that arrived, the packet IDs a path has to acknowledge, the ranges a failed
// delegation still owes); RecvBuffer stores bytes
// received at arbitrary KWIK offsets (from any server, out of order, duplicated or
// overlapping, the first writer winning) in pooled blocks until an ordered Read consumes them.
// Nothing here locks, does I/O or starts goroutines: the caller serialises access (a stream's
// receive half holds its own mutex around its RecvBuffer) and enforces limits such as flow
// control, which lives in internal/flowcontrol, so this package only has to be correct on
// every input, hostile ones included.
package data
