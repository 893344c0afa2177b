package compare

import (
	"context"
	"testing"
	"time"
)

// The batching comparison runs on all three transports, and batching saves DataPackets in a
// burst of small streams (the figures are BenchmarkBatching's, in the root package).
func TestBatching(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := Batching(ctx, BatchingConfig{Streams: 200, Size: 1 << 10, Requests: 20})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]BatchingSide{"quic-go": r.QUIC, "KWIK": r.KWIK, "KWIK unbatched": r.KWIKUnbatched} {
		if s.Burst <= 0 || s.P50 <= 0 || s.P99 < s.P50 || s.WireBytes == 0 || s.QUICPackets == 0 {
			t.Errorf("%s: implausible %+v", name, s)
		}
	}
	// Without batching every request, response and end is a DataPacket of its own.
	if r.KWIKUnbatched.DataPackets < 2*200 {
		t.Errorf("unbatched: %d DataPackets for 200 request/response streams", r.KWIKUnbatched.DataPackets)
	}
	t.Logf("DataPackets: %d batched, %d unbatched; quic-go %+v; KWIK %+v; unbatched %+v",
		r.KWIK.DataPackets, r.KWIKUnbatched.DataPackets, r.QUIC, r.KWIK, r.KWIKUnbatched)
}
