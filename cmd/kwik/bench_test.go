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
		want := []string{"download", "upload", "small", "multisource"}
		if kill {
			args = append(args, "--kill", "--scenarios", "multisource")
			want = []string{"multisource"}
		}
		lines := runBenchRows(t, args, want)
		if kill && !strings.Contains(lines[1], "killed") {
			t.Errorf("the multisource row does not tell of the kill: %q", lines[1])
		}
	}
}

// The wan sweep, shrunk to one delay and 1 MiB, prints a row for each scenario against
// quic-go, one against striping for each with several servers, and one against striping by
// rate for each whose rates differ.
func TestBenchWAN(t *testing.T) {
	runBenchRows(t, []string{"--scenarios", "wan", "--wan-delays", "2ms", "--wan-size", "1"}, []string{
		"wan:3x50/2ms", "wan:3x50/2ms:striping", "wan:80+20+20/2ms", "wan:80+20+20/2ms:striping",
		"wan:80+20+20/2ms:striping-by-rate", "wan:1x200/2ms",
	})
}

// The http scenario, shrunk to one delay and 2 MiB, prints a row against http3, one against
// striping, and one against striping for the first download each way.
func TestBenchHTTP(t *testing.T) {
	runBenchRows(t, []string{"--scenarios", "http", "--http-delays", "2ms", "--http-size", "2"}, []string{
		"http:3x50/2ms", "http:3x50/2ms:striping", "http:3x50/2ms:striping:first",
	})
}

// runBenchRows runs kwik bench with args and checks that it prints a header and a row for each
// scenario of want, in order, with positive figures; it returns the lines.
func runBenchRows(t *testing.T, args, want []string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := benchCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("%q: %v\n%s", args, err, out.String())
	}
	t.Logf("%q:\n%s", args, out.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1+len(want) || !strings.HasPrefix(lines[0], "scenario") {
		t.Fatalf("%q: want a header and %d rows, got:\n%s", args, len(want), out.String())
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
	return lines
}

func TestBenchFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--scenarios", "loopback,nope"},
		{"--size", "0"},
		{"--sources", "1", "--kill"},
		{"--wan-size", "-1"},
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
