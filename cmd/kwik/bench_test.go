package main

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// kwik bench, with tiny sizes, prints a row for every scenario with positive figures, also
// when the last secondary is killed half way.
func TestBench(t *testing.T) {
	for _, kill := range []bool{false, true} {
		args := []string{"--size", "4", "--streams", "50", "--sources", "2", "--rate", "200",
			"--delay", "2ms", "--multisource-size", "4", "--count", "2"}
		if kill {
			args = append(args, "--kill", "--scenarios", "multisource")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := benchCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(args)
		err := cmd.ExecuteContext(ctx)
		cancel()
		if err != nil {
			t.Fatalf("kill %v: %v\n%s", kill, err, out.String())
		}
		t.Logf("kill %v:\n%s", kill, out.String())

		want := []string{"download", "upload", "small", "multisource"}
		if kill {
			want = []string{"multisource"}
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 1+len(want) || !strings.HasPrefix(lines[0], "scenario") {
			t.Fatalf("kill %v: want a header and %d rows, got:\n%s", kill, len(want), out.String())
		}
		for i, scenario := range want {
			f := strings.Fields(lines[1+i])
			if len(f) < 5 || f[0] != scenario {
				t.Fatalf("row %d: want scenario %s, got %q", i, scenario, lines[1+i])
			}
			for _, s := range f[2:5] { // KWIK, quic-go, ratio
				if v, err := strconv.ParseFloat(s, 64); err != nil || !(v > 0) {
					t.Errorf("%s: figure %q is not positive", scenario, s)
				}
			}
		}
		if kill && !strings.Contains(lines[1], "killed") {
			t.Errorf("the multisource row does not tell of the kill: %q", lines[1])
		}
	}
}

func TestBenchFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--scenarios", "loopback,nope"},
		{"--size", "0"},
		{"--sources", "1", "--kill"},
		{"extra"},
	} {
		cmd := benchCommand()
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(args)
		if err := cmd.Execute(); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
