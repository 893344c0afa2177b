package compare

import (
	"context"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// A setup that fails half way closes what it had opened (goleak checks that nothing is left).
// The scenarios themselves run in cmd/kwik's TestBench and the root package's benchmarks.
func TestSetupFails(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if l, err := NewLoopback(ctx, 10); err == nil {
		l.Close()
		t.Error("NewLoopback with a canceled context: no error")
	}
	conf := MultiSourceConfig{Rates: []int64{100, 100}, QUICRate: 100, Delay: time.Millisecond, Size: 1 << 20}
	if m, err := NewMultiSource(ctx, conf); err == nil {
		m.Close()
		t.Error("NewMultiSource with a canceled context: no error")
	}
	for _, bad := range []MultiSourceConfig{
		{QUICRate: 100, Size: 1},
		{Rates: []int64{100}, QUICRate: 100, Size: 1, Kill: true},
		{Rates: []int64{100, 0}, QUICRate: 100, Size: 1},
	} {
		if _, err := NewMultiSource(context.Background(), bad); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}
