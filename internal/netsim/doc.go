// Package netsim emulates network links in user space for tests and benchmarks. A Relay listens on
// a local UDP address and forwards every client's datagrams to one target through a per-client
// upstream socket, so a QUIC client that dials the relay instead of the server reaches the server
// across an emulated link; each path of a KWIK session gets its own relay and so its own link. Each
// direction behaves like a router port in front of a bottleneck: datagrams are serialised at the
// configured rate through a bounded drop-tail queue, then held for the one-way propagation delay,
// and random loss and a blackhole (which silences the path without closing anything) can be
// switched on at run time. The socket readers never block on the emulated link, so bursts are
// dropped by the emulated queue, where Stats counts them, and not by the kernel. Only the rate,
// delay, loss and queue of Config are modelled: there is no jitter, reordering, duplication or
// corruption, and IP and UDP headers count towards the rate as a fixed 28 bytes per datagram.
package netsim
