package kwik

import "testing"

// Stats' numbers move with the traffic, on every path that carried some.
func TestStats(t *testing.T) {
	ms := newMultiSource(t, 2, delegationConf)
	before := ms.p.client.Stats()
	if len(before.Paths) != 3 {
		t.Fatalf("client sees %d paths, want 3", len(before.Paths))
	}
	for _, p := range before.Paths {
		if p.BytesReceived != 0 {
			t.Fatalf("path %s received %d bytes before any stream", p.PathID, p.BytesReceived)
		}
	}
	fanoutDownload(t, ms, nil, content(0, 4<<20), &FanoutOptions{ChunkSize: 128 << 10}, nil)
	after := ms.p.client.Stats()
	for _, p := range after.Paths {
		if p.BytesReceived < 256<<10 || p.PacketsReceived == 0 || p.QUIC.SmoothedRTT <= 0 {
			t.Errorf("client path %s (primary %v): %d bytes, %d packets, srtt %v", p.PathID, p.IsPrimary, p.BytesReceived, p.PacketsReceived, p.QUIC.SmoothedRTT)
		}
	}
	if after.BytesReceived < 4<<20 || after.DelegationsInFlight != 0 {
		t.Errorf("client totals: %+v", after)
	}
	for i, sec := range ms.secs {
		st := sec.Stats()
		if len(st.Paths) != 1 || st.Paths[0].BytesSent == 0 || st.Paths[0].PacketsAcked == 0 {
			t.Errorf("secondary %d: %+v", i, st.Paths)
		}
	}
	if ps := ms.p.server.Stats(); len(ps.Paths) != 3 || ps.Paths[0].BytesSent == 0 {
		t.Errorf("primary: %+v", ps.Paths)
	}
}
