// Package wire turns KWIK's wire format into bytes and back. Every QUIC stream of a KWIK session
// carries protobuf messages (defined in proto/, generated into package pb), each behind its length
// as a protobuf varint. Reader splits a stream into message bodies and checks every length against
// a maximum before it reads or allocates anything, so a peer cannot make a session buffer more than
// it agreed to. Control frames are rare and go through the generated code (AppendControlFrame,
// ParseControlFrame); DataPackets carry every byte of user data, so they have their own protowire
// codec (AppendDataPacket, ParseDataPacket) that neither allocates nor copies payloads, yet writes
// the same bytes as the generated marshaller and accepts whatever the generated parser accepts,
// which the tests and fuzz targets check both ways. No input from the network can make this
// package panic: a bad message is an error wrapping ErrMalformed, or a *MessageTooLargeError.
package wire
