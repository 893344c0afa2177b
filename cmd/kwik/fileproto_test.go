package main

import (
	"strings"
	"testing"
)

func TestFileProtocolLines(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
	}{
		{"GET 0 a.bin", true},
		{"GET 12 dir/with space.bin", true},
		{"GET 0 ../x", false},
		{"GET 0 /etc/passwd", false},
		{"GET 0 a/../../x", false},
		{"GET 0 a//b", false},
		{"GET 0 ", false},
		{"GET -1 a", false},
		{"GET x a", false},
		{"GET 99999999999999999999 a", false},
		{"PUT 0 a", false},
		{"GET 0 a\x00b", false},
	} {
		_, err := parseGet(tc.line)
		if (err == nil) != tc.ok {
			t.Errorf("parseGet(%q): %v", tc.line, err)
		}
	}
	for _, tc := range []struct {
		line string
		ok   bool
	}{
		{"RANGE 0 10 10 a", true},
		{"RANGE 5 5 10 a", true},
		{"RANGE 5 6 10 a", false},
		{"RANGE 11 0 10 a", false},
		{"RANGE 0 0 10 a", false},
		{"RANGE 9223372036854775807 9223372036854775807 9223372036854775807 a", false},
		{"RANGE 0 10 a", false},
	} {
		_, err := parseRange(tc.line)
		if (err == nil) != tc.ok {
			t.Errorf("parseRange(%q): %v", tc.line, err)
		}
	}
	if r, err := parseRange(rangeRequest{offset: 3, n: 4, size: 9, name: "a b"}.String()[:len("RANGE 3 4 9 a b")]); err != nil || r.name != "a b" || r.offset != 3 || r.n != 4 || r.size != 9 {
		t.Errorf("round trip: %+v, %v", r, err)
	}
	if size, sum, err := parseResponse("OK 42"); size != 42 || sum != nil || err != nil {
		t.Errorf("OK 42: %d, %v", size, err)
	}
	digest := strings.Repeat("ab", 32)
	if size, sum, err := parseResponse("OK 42 " + digest); size != 42 || len(sum) != 32 || err != nil {
		t.Errorf("OK 42 with a digest: %d, %x, %v", size, sum, err)
	}
	if _, _, err := parseResponse("ERR gone"); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("ERR gone: %v", err)
	}
	for _, bad := range []string{"OK", "OK x", "OK 1 2", "HELLO", "OK 1 ", "OK 1 " + strings.Repeat("ab", 31), "OK 1 " + strings.Repeat("xy", 32)} {
		if _, _, err := parseResponse(bad); err == nil {
			t.Errorf("parseResponse(%q) accepted", bad)
		}
	}
	if _, err := readLine(strings.NewReader(strings.Repeat("x", maxLine+10) + "\n")); err == nil {
		t.Error("an overlong line was read")
	}
	if _, err := readLine(strings.NewReader("no newline")); err == nil {
		t.Error("a truncated line was read")
	}
	r := strings.NewReader("OK 5\nhello")
	if line, err := readLine(r); line != "OK 5" || err != nil || r.Len() != 5 {
		t.Errorf("readLine: %q, %v, %d bytes left", line, err, r.Len())
	}
}
