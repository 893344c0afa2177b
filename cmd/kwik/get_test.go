package main

import (
	"strings"
	"testing"
)

func TestCleanName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a.bin", true},
		{"dir/with space.bin", true},
		{"../x", false},
		{"/etc/passwd", false},
		{"a/../../x", false},
		{"a//b", false},
		{"", false},
		{"a\x00b", false},
		{"a\r\nb", false},
		{`a\b`, false},
	} {
		if _, err := cleanName(tc.name); (err == nil) != tc.ok {
			t.Errorf("cleanName(%q): %v", tc.name, err)
		}
	}
}

func TestResponseFields(t *testing.T) {
	for _, tc := range []struct {
		v            string
		start, total int64
		ok           bool
	}{
		{"bytes 0-9/10", 0, 10, true},
		{"bytes 5-9/10", 5, 10, true},
		{"bytes 10-9/10", 0, 0, false},
		{"bytes */10", 0, 0, false},
		{"bits 0-9/10", 0, 0, false},
		{"bytes x-9/10", 0, 0, false},
	} {
		start, total, ok := contentRange(tc.v)
		if ok != tc.ok || (ok && (start != tc.start || total != tc.total)) {
			t.Errorf("contentRange(%q) = %d, %d, %v", tc.v, start, total, ok)
		}
	}
	digest := "sha-256=:" + strings.Repeat("A", 43) + "=:"
	if b := sha256Of(digest); len(b) != 32 {
		t.Errorf("sha256Of(%q) = %x", digest, b)
	}
	for _, bad := range []string{"", "sha-512=:AAAA:", "sha-256=:AAAA:", "sha-256=" + strings.Repeat("A", 44)} {
		if b := sha256Of(bad); b != nil {
			t.Errorf("sha256Of(%q) = %x", bad, b)
		}
	}
}
