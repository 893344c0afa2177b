package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// The example downloads its generated file through a primary and two secondaries.
func TestExample(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, "", "large.bin", 16<<20, &out); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	if !strings.Contains(out.String(), "large.bin: 16777216 bytes") {
		t.Fatalf("output:\n%s", out.String())
	}
	rows := regexp.MustCompile(`(primary|secondary)\s+\S+\s+[\d.]+ MiB`).FindAllString(out.String(), -1)
	if len(rows) != 3 {
		t.Fatalf("want a row per server:\n%s", out.String())
	}
}
