package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/kwikhttp"
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

// A primary whose bytes do not match its Repr-Digest (here it announces another file's):
// kwik get fails, says CORRUPT, and leaves nothing under the output name, the bytes moved to
// NAME.corrupt, for a whole download (the Transport's check) and a resumed one (get's own
// check over the whole file).
func TestGetCorruptFileFailsLoudly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tlsConf, fingerprint, err := serverTLS("", "", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := kwik.Listen("127.0.0.1:0", tlsConf, &kwik.Config{ListenerRole: kwik.ListenPrimary})
	if err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	content := bytes.Repeat([]byte("the primary's bytes "), size/20)
	other := sha256.Sum256([]byte("another file"))
	srv := &kwikhttp.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Repr-Digest", kwikhttp.SHA256Field(other[:]))
		kwikhttp.ServeContent(w, r, "f.bin", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), bytes.NewReader(content), int64(len(content)))
	})}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	defer func() { srv.Close(); closeListener(ln); <-served }()

	out := filepath.Join(t.TempDir(), "f.bin")
	for _, resume := range []bool{false, true} {
		if resume {
			if err := os.WriteFile(out, content[:size/3], 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var stdout, stderr bytes.Buffer
		o := getOptions{output: out, resume: resume, pins: []string{fingerprint}, noProgress: true}
		err := runGet(ctx, o, ln.Addr().String(), "f.bin", &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "CORRUPT") || !strings.Contains(err.Error(), out+".corrupt") {
			t.Fatalf("resume=%v: kwik get: %v, want a failure that says CORRUPT and where the bytes went\n%s", resume, err, stderr.String())
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("resume=%v: %s is still there (%v)", resume, out, err)
		}
		if fi, err := os.Stat(out + ".corrupt"); err != nil || fi.Size() != int64(len(content)) {
			t.Fatalf("resume=%v: %s.corrupt: %v", resume, out, err)
		}
		if stdout.Len() != 0 {
			t.Fatalf("resume=%v: kwik get reported %q", resume, stdout.String())
		}
	}
}
