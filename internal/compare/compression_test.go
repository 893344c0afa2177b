package compare

import (
	"context"
	"testing"
	"time"
)

// Compression runs every case intact, and compressed logs cross the link in fewer bytes than
// plain ones (the figures are BenchmarkCompression's, in the root package).
func TestCompressionScenario(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const size = 1 << 20
	cases, err := Compression(ctx, CompressionConfig{Size: size, RateMbit: 200, Delay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wire := map[string]uint64{}
	for _, c := range cases {
		if c.Elapsed <= 0 || c.WireBytes == 0 {
			t.Errorf("implausible %+v", c)
		}
		wire[c.Data+" "+c.Transport] = c.WireBytes
		t.Logf("%+v", c)
	}
	if wire["logs KWIK+zstd"]*2 > wire["logs KWIK"] {
		t.Errorf("logs: %d bytes on the wire compressed, %d plain", wire["logs KWIK+zstd"], wire["logs KWIK"])
	}
	if wire["random KWIK+zstd"] < size {
		t.Errorf("random data shrank to %d bytes", wire["random KWIK+zstd"])
	}
}
