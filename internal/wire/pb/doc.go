// Package pb is the Go code protoc-gen-go generates from KWIK's wire specification, the .proto
// files in the repository's proto/ directory: the control plane (ControlFrame and its payloads,
// carried on each path's control stream), the data plane (DataPacket, DataFrame, AckFrame) and the
// types both share. The .pb.go files are committed so that building KWIK needs no protoc, and are
// never edited by hand: change the .proto files and run go generate (see generate.go). The data
// hot path bypasses these types for the allocation-free codec in package wire, which is tested to
// stay byte-compatible with them.
package pb
