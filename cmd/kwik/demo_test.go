package main

import (
	"context"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// The demo transfers intact through a primary and two secondaries, also when one secondary is
// blackholed mid-transfer (runDemo fails if a byte is wrong).
func TestDemo(t *testing.T) {
	for _, kill := range []time.Duration{0, 300 * time.Millisecond} {
		o := demoOptions{secondaries: 2, sizeMiB: 8, rateMbit: 100, delay: 5 * time.Millisecond, killAfter: kill}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := runDemo(ctx, o); err != nil {
			t.Fatalf("kill-after %v: %v", kill, err)
		}
		cancel()
	}
}
