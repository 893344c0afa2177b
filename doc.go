// Package kwik is a transport on top of quic-go in which one client receives one logical
// stream from several servers at once, behind QUIC's own API.
//
// # Usage
//
// A client dials one server, the primary; the primary accepts. Both sides then open and accept
// streams exactly as with quic-go:
//
//	ln, _ := kwik.Listen("0.0.0.0:4242", serverTLS, nil)
//	sess, _ := ln.Accept(ctx)
//	st, _ := sess.AcceptStream(ctx)
//
//	sess, _ := kwik.Dial(ctx, "primary:4242", clientTLS, nil)
//	st, _ := sess.OpenStreamSync(ctx)
//	st.Write(req); st.Close()
//	resp, _ := io.ReadAll(st)
//
// Porting a quic-go application is a change of import: DialAddr and ListenAddr keep quic-go's
// names, sessions and streams keep its method names, and ApplicationError and StreamError are
// quic-go's own types.
//
// # Streams
//
// Logical streams are multiplexed onto real QUIC streams (Config.StreamsPerRealStream logical
// streams per real one, 4 by default), so many short streams cost few QUIC streams. Every
// logical stream has its own receive credit: a reader that stops reading holds at most its
// window of memory and stalls only its own senders, never the other logical streams that share
// its real stream. Windows tune themselves as quic-go's do: a stream starts small and doubles
// its window while the application reads it fast for the round trips of the paths delivering
// to it (weighted by what each delivered), up to Config.StreamReceiveWindow (32 MiB); all the
// session's streams together stay within Config.MaxSessionReceiveWindow (64 MiB) plus their
// small initial windows. The defaults fill several 100 Mbit/s paths 100 ms away. Opening a
// stream costs no round trip. Unidirectional streams (OpenUniStream, AcceptUniStream) and
// datagrams (SendDatagram, ReceiveDatagram, on the primary path when QUIC.EnableDatagrams is
// set on both sides) are there as in quic-go; stream IDs are numbered as quic-go numbers them.
//
// # Cancellation
//
// Stream.CancelRead and Stream.CancelWrite reach the peer as a *StreamError carrying the code.
// Deadlines make Read and Write return a net.Error whose Timeout is true. Session.CloseWithError
// ends every pending call on both sides with an *ApplicationError; a protocol violation by the
// peer ends the session with a *Error carrying one of KWIK's codes (errors.Is(err,
// kwik.ErrInvalidFrame) and so on). Every goroutine of a session ends when it closes.
//
// # Paths
//
// The primary adds a secondary server with Session.AddPath(address): the client dials it and
// authenticates with the session ID and a join token that the primary signs with
// Config.JoinKey, a key the primary and its secondaries share. The secondary's Listener.Accept
// then returns a session whose Role is RoleSecondary and whose ID is the client's session ID.
// Session.JoinPath does the same without waiting for the client's answer: it returns the
// path's ID at once, and ranges delegated to it meanwhile are held by the client until the
// join ends (a secondary's first bytes come a round trip sooner).
// Every side lists the session's paths with GetActivePaths, GetDeadPaths and GetAllPaths.
// Liveness rests on QUIC's loss recovery. The primary path behaves as a quic-go connection: it
// ends after QUIC.MaxIdleTimeout without traffic (unless QUIC.KeepAlivePeriod asks for
// keep-alives), or when its link is cut, and the session then ends on every side with an error
// for which errors.As(err, new(*quic.IdleTimeoutError)) holds (a secondary hears
// KWIK_PATH_DEAD from the client). A client watches each secondary path with heartbeats and
// marks it DEAD once its QUIC connection has received nothing for Config.PathTimeout: a dead
// secondary path dies alone (the primary is told, and operations naming it fail with
// ErrPathDead). RemovePath closes a secondary cleanly. SendRawData relays bytes through the
// client to any server of the session, which reads them with ReceiveRawData.
//
// A client rejoins a secondary path that died (silent, or its connection failed) as
// Config.PathRetry says, under the same path ID with a fresh token from the primary; a path the
// primary removed, or one cut off for a protocol violation, is never rejoined.
//
// # Delegation
//
// On the primary, Stream.Delegate(pathID, length, request) reserves the next length bytes of
// a stream for the secondary on pathID; later Writes land after them. The secondary receives
// the delegation as a stream from AcceptStream: Read yields the request, Write fills the
// range on the client, Close completes it; a secondary with several ranges outstanding sends
// a stream's lowest first. The client reads one stream, reassembled by offset, and accepts a
// secondary's bytes only inside the ranges delegated to its path. Delegation.Wait returns nil
// once the client holds the range, or a *DelegationError naming the undelivered suffix: the
// path died, the secondary closed short, or the range delivered nothing new for its progress
// deadline (Config.DelegationProgressTimeout, by default derived from the paths' round trips
// and the secondary's rate; the secondary is then told to stop). Stream.WriteAt fills the
// suffix, even after Close; bytes already refilled are not sent twice, so refilling a range
// twice is harmless. When the client cancels reading or the primary resets the stream, the
// secondaries' Writes on its ranges fail with that code. Fanout and ServeFanout do all of this
// for a known-size resource.
//
// No call blocks forever because of a delegation. A failed range leaves a gap that holds the
// client's reader, and with it the credit the primary's later Writes wait for: a Write (or
// WriteAt) waiting for credit behind the unfilled suffix of a failed delegation returns an
// error wrapping its *DelegationError, so that one sequential loop refills it and goes on:
//
//	for len(p) > 0 {
//		n, err := st.Write(p)
//		p = p[n:]
//		var de *kwik.DelegationError
//		if errors.As(err, &de) { // refill from the primary's own copy (WriteAt may in turn report an earlier gap)
//			_, err = st.WriteAt(data[de.Offset:de.Offset+de.Remaining], de.Offset)
//		}
//		if err != nil { ... }
//	}
//
// A delegation whose outcome the application waits for (it called Wait or Done before the
// failure, from another goroutine say) is that goroutine's to refill: Writes blocked behind it
// keep waiting. A hung secondary (it takes its ranges and never writes, while its path lives)
// costs about one progress deadline: its ranges all fail at once and the client refuses it
// new ones for a few deadlines. Wait, Write and WriteAt return when the session ends.
//
// # Batching and compression
//
// Small frames of the logical streams that share a real QUIC stream are batched: those written
// while a write is under way leave together in the next DataPacket, and a lone one leaves at
// once (Config.DisableBatching turns this off). Config.Compression compresses DataPackets with
// zstd where it pays, on paths whose both sides enable it.
//
// # Observability
//
// Session.Stats returns a snapshot of every path: bytes and DataPackets each way, packets
// acknowledged, status, delegations in flight, and quic-go's own ConnectionStats (smoothed
// RTT, congestion window). Package kwikprom exports these snapshots as Prometheus metrics
// through a collector the application registers itself. Config.Logger receives the session's
// events (sessions, paths, delegations, protocol errors) through log/slog; without one, KWIK
// logs nothing and never prints.
//
// # Limitations
//
//   - Receive memory is bounded per session (Config.MaxSessionReceiveWindow, plus each open
//     stream's small initial window). As with QUIC's connection flow control, streams left
//     unread while they hold the whole budget can stall the streams the application reads.
//   - A Write blocked inside QUIC itself (not on KWIK's credit) is not interrupted by its
//     deadline or by CancelWrite: receivers always drain their real streams, so such waits last
//     about one message's sending time, unless the path is dead, in which case the Write fails
//     once the path is declared dead.
//   - A secondary is trusted with the content of the ranges delegated to it unless the primary
//     gives their digests, as Fanout does by default: the client rejects bytes outside a
//     range, and wrong bytes inside one only when it has its digests. A range delegated with
//     plain Stream.Delegate carries none; verify such content end to end (a digest) when a
//     secondary may be stale or compromised.
//   - SendRawData travels on the control streams, in order with control frames, and is
//     dropped (and counted in SessionStats.RawDataDropped) beyond Config.MaxPendingRawData
//     when the receiver does not call ReceiveRawData.
//   - Compression (Config.Compression) is off by default: compressing secrets next to data an
//     attacker chooses leaks them through packet sizes (CRIME, BREACH).
package kwik
