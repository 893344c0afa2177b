package compare

import (
	"context"
	"testing"
	"time"
)

// Fifty sessions of ten streams each download through a primary and a secondary at once,
// every byte checked, and everything closes (TestMain checks for leaks); the secondary carries
// part of the load. The 500-session run is BenchmarkSoak in the root package.
func TestSoak(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Soak(ctx, SoakConfig{Sessions: 50, Streams: 10, StreamSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if res.SecondaryShare <= 0 || res.SecondaryShare >= 1 {
		t.Errorf("the secondary sent %.0f%% of the bytes; want a part of them", 100*res.SecondaryShare)
	}
	for _, side := range []SoakSide{res.QUIC, res.KWIK} {
		if side.P50 <= 0 || side.P99 < side.P50 || side.Goroutines <= 0 || side.HeapIdle <= 0 {
			t.Errorf("implausible measurements: %+v", side)
		}
	}
	t.Logf("quic-go %+v\nKWIK %+v\nsecondary share %.2f", res.QUIC, res.KWIK, res.SecondaryShare)
}
