package kwik

import (
	"time"

	"github.com/kwik-go/kwik/internal/data"

	"github.com/quic-go/quic-go"
)

// PathStats is what one path has carried, as this side saw it.
type PathStats struct {
	PathInfo
	// KWIK data plane: DataPackets (length prefix included) sent and received on this path,
	// and this side's packets the peer acknowledged.
	BytesSent, BytesReceived     uint64
	PacketsSent, PacketsReceived uint64 // DataPackets, each way
	PacketsAcked                 uint64 // this side's DataPackets the peer acknowledged
	// DelegationsInFlight: on the client, ranges delegated to this path not yet complete.
	DelegationsInFlight int
	// QUIC is quic-go's own view of the connection (RTTs, congestion window, bytes with
	// retransmissions); zero for a path with no connection on this side.
	QUIC quic.ConnectionStats
}

// SessionStats is a snapshot of a session's paths.
type SessionStats struct {
	Paths                    []PathStats   // in creation order, dead and removed ones included
	BytesSent, BytesReceived uint64        // sums over the paths
	SmoothedRTT              time.Duration // of the primary path's QUIC connection
	DelegationsInFlight      int           // client: ranges not yet complete; primary: not yet resolved
	StreamsOpen              int           // logical streams not yet finished both ways
	RawDataDropped           uint64        // relayed messages dropped because ReceiveRawData lagged
	// ReceiveBuffered is the memory the session's logical streams hold now for bytes received
	// and not yet read (in 16 KiB blocks); PeakReceiveBuffered is the most they held at once
	// since the session began. Flow control bounds both (Config.MaxSessionReceiveWindow).
	ReceiveBuffered, PeakReceiveBuffered uint64
}

// Stats returns a snapshot of the session's paths and traffic.
func (s *session) Stats() SessionStats {
	var st SessionStats
	var infos []PathInfo
	var conns []*path // r.p changes when a dead path is rejoined
	s.inspect(func() {
		recs := s.paths.records
		infos = make([]PathInfo, len(recs))
		conns = make([]*path, len(recs))
		for i, r := range recs {
			infos[i], conns[i] = r.info(), r.p
		}
	})

	inFlight := make(map[*path]int)
	s.clientDelegs.mu.Lock()
	for _, d := range s.clientDelegs.byID {
		inFlight[d.path]++
	}
	s.clientDelegs.mu.Unlock()

	for i := range infos {
		ps := PathStats{PathInfo: infos[i]}
		if p := conns[i]; p != nil {
			ps.BytesSent = p.stats.bytesSent.Load()
			ps.BytesReceived = p.stats.bytesReceived.Load()
			ps.PacketsSent = p.stats.packetsSent.Load()
			ps.PacketsReceived = p.stats.packetsReceived.Load()
			ps.PacketsAcked = p.stats.packetsAcked.Load()
			ps.DelegationsInFlight = inFlight[p]
			ps.QUIC = p.conn.ConnectionStats()
		}
		st.BytesSent += ps.BytesSent
		st.BytesReceived += ps.BytesReceived
		st.DelegationsInFlight += ps.DelegationsInFlight
		st.Paths = append(st.Paths, ps)
	}
	if s.primary != nil {
		st.SmoothedRTT = s.primary.conn.ConnectionStats().SmoothedRTT
	}
	s.streams.mu.Lock()
	st.StreamsOpen = len(s.streams.streams)
	s.streams.mu.Unlock()
	st.ReceiveBuffered = uint64(s.credit.blocks.Load()) * data.BlockSize
	st.PeakReceiveBuffered = uint64(s.credit.peakBlocks.Load()) * data.BlockSize
	s.raw.mu.Lock()
	st.RawDataDropped = s.raw.dropped
	s.raw.mu.Unlock()
	if s.role == RolePrimary {
		s.delegs.mu.Lock()
		st.DelegationsInFlight = len(s.delegs.byID)
		s.delegs.mu.Unlock()
	}
	return st
}
