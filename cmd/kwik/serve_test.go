package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/selfsigned"
)

// buildKwik builds the kwik command into a temporary directory, once per test binary.
func buildKwik(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go") // go test puts its own GOROOT/bin first in PATH
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "kwik")
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// writeRandomFile writes size pseudo-random bytes to path and returns their SHA-256.
func writeRandomFile(t *testing.T, path string, size int64, seed uint64) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	var s [32]byte
	s[0] = byte(seed)
	w := io.MultiWriter(f, h)
	if _, err := io.CopyN(w, rand.NewChaCha8(s), size); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// server is a `kwik serve` process.
type server struct {
	cmd         *exec.Cmd
	addr        string
	fingerprint string
	stderr      bytes.Buffer
	exited      chan error
}

// startServer runs `kwik serve args...` and waits for it to print its address and certificate.
func startServer(t *testing.T, ctx context.Context, bin string, env []string, args ...string) *server {
	t.Helper()
	s := &server{cmd: exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...), exited: make(chan error, 1)}
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stderr = &s.stderr
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		s.exited <- s.cmd.Wait()
	}()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		for range lines {
		}
	})
	addrLine := regexp.MustCompile(`listening on (\S+),`)
	for s.addr == "" || s.fingerprint == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("kwik serve %v exited: %s", args, s.stderr.String())
			}
			if m := addrLine.FindStringSubmatch(line); m != nil {
				s.addr = m[1]
			}
			if _, fp, ok := strings.Cut(line, "sha256 "); ok {
				s.fingerprint = fp
			}
		case <-ctx.Done():
			t.Fatalf("kwik serve %v did not start", args)
		}
	}
	go func() {
		for range lines {
		}
	}()
	return s
}

// stop interrupts the server and checks that it exits cleanly.
func (s *server) stop(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-s.exited:
		if err != nil {
			t.Errorf("kwik serve exited with %v: %s", err, s.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("kwik serve still running 30 s after an interrupt")
	}
}

// secondaryBytes reads, from kwik get's per-path table, the MiB each secondary brought.
func secondaryBytes(t *testing.T, table string) []float64 {
	t.Helper()
	var got []float64
	row := regexp.MustCompile(`\ssecondary\s+\S+\s+([\d.]+) MiB`)
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	return got
}

// A primary and two secondaries, as separate processes with a certificate from files and the
// join key from a file and the environment, serve a 200 MiB file that kwik get downloads
// intact, part of it from each secondary.
func TestServeGet(t *testing.T) {
	if testing.Short() {
		t.Skip("200 MiB through three processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := buildKwik(t)
	dir := t.TempDir()
	served := filepath.Join(dir, "files")
	if err := os.MkdirAll(filepath.Join(served, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := writeRandomFile(t, filepath.Join(served, "sub", "big.bin"), 200<<20, 1)

	cert, err := selfsigned.Certificate([]string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := selfsigned.PEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, keyFileJoin := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "join.key")
	for f, b := range map[string][]byte{certFile: certPEM, keyFile: keyPEM, keyFileJoin: []byte("a join key of more than 16 bytes\n")} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsArgs := []string{"--cert", certFile, "--key", keyFile, "--dir", served}
	env := []string{joinKeyEnv + "=a join key of more than 16 bytes"}
	sec1 := startServer(t, ctx, bin, env, append([]string{"--secondary"}, tlsArgs...)...)
	sec2 := startServer(t, ctx, bin, env, append([]string{"--secondary"}, tlsArgs...)...)
	prim := startServer(t, ctx, bin, nil, append([]string{"--primary", "--join-key-file", keyFileJoin,
		"--secondaries", sec1.addr + "," + sec2.addr}, tlsArgs...)...)

	out := filepath.Join(dir, "big.out")
	get := exec.CommandContext(ctx, bin, "get", "--ca", certFile, "--no-progress", "-o", out, prim.addr, "sub/big.bin")
	table, err := get.CombinedOutput()
	if err != nil {
		t.Fatalf("kwik get: %v\n%s\nprimary: %s", err, table, prim.stderr.String())
	}
	if fileSum(t, out) != want {
		t.Fatalf("downloaded file differs from the served one\n%s", table)
	}
	shares := secondaryBytes(t, string(table))
	if len(shares) != 2 || shares[0] == 0 || shares[1] == 0 {
		t.Fatalf("want two secondaries that each sent bytes, got %v in\n%s", shares, table)
	}
	t.Logf("kwik get:\n%s", table)
	for _, s := range []*server{prim, sec1, sec2} {
		s.stop(t)
	}
}

// With generated certificates, kwik get trusts the fingerprints kwik serve prints. A secondary
// whose replica has the wrong size serves nothing and the primary fills in; --resume finishes
// a partial file; a missing file, a bad name and an unpinned server are clear errors.
func TestServeGetSelfSigned(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := buildKwik(t)
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	for _, d := range []string{good, bad} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const size = 8 << 20
	want := writeRandomFile(t, filepath.Join(good, "f.bin"), size, 2)
	writeRandomFile(t, filepath.Join(bad, "f.bin"), size/2, 2)
	env := []string{joinKeyEnv + "=another join key, long enough for kwik serve"}
	sec1 := startServer(t, ctx, bin, env, "--secondary", "--dir", good)
	sec2 := startServer(t, ctx, bin, env, "--secondary", "--dir", bad)
	prim := startServer(t, ctx, bin, env, "--primary", "--dir", good, "--secondaries", sec1.addr+","+sec2.addr)
	// Each server pinned under its own address.
	pins := strings.Join([]string{prim.fingerprint, sec1.addr + "=" + sec1.fingerprint, sec2.addr + "=" + sec2.fingerprint}, ",")

	get := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, bin, append([]string{"get", "--no-progress"}, args...)...).CombinedOutput()
		return string(out), err
	}
	out := filepath.Join(dir, "f.out")
	if msg, err := get("--pin", pins, "-o", out, prim.addr, "f.bin"); err != nil {
		t.Fatalf("kwik get: %v\n%s", err, msg)
	}
	if fileSum(t, out) != want {
		t.Fatal("downloaded file differs from the served one")
	}
	// Resume: cut the file and fetch the rest.
	if err := os.Truncate(out, size/3); err != nil {
		t.Fatal(err)
	}
	if msg, err := get("--pin", pins, "-c", "-o", out, prim.addr, "f.bin"); err != nil || !strings.Contains(msg, strconv.Itoa(size-size/3)+" this time") {
		t.Fatalf("kwik get -c: %v\n%s", err, msg)
	}
	if fileSum(t, out) != want {
		t.Fatal("resumed file differs from the served one")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--pin", pins, "-o", filepath.Join(dir, "x"), prim.addr, "missing.bin"}, "404 Not Found"},
		{[]string{"--pin", pins, "-o", filepath.Join(dir, "x"), prim.addr, "../good/f.bin"}, "bad file name"},
		{[]string{"--pin", sec1.fingerprint, "-o", filepath.Join(dir, "x"), prim.addr, "f.bin"}, "not pinned"},
		// A secondary's certificate does not pass for the primary's address (finding 9).
		{[]string{"--pin", prim.addr + "=" + sec1.fingerprint, "-o", filepath.Join(dir, "x"), prim.addr, "f.bin"}, "not pinned"},
	} {
		msg, err := get(tc.args...)
		if err == nil || !strings.Contains(msg, tc.want) {
			t.Errorf("kwik get %v: %v, %q; want an error with %q", tc.args, err, msg, tc.want)
		}
	}
	for _, s := range []*server{prim, sec1, sec2} {
		s.stop(t)
	}
}

// The trust boundaries of kwik serve and kwik get (issue 13): a secondary serves no one who
// dials it directly; a replica with the right size and other bytes serves nothing (its ETag,
// the file's SHA-256, is not the primary's) and the file arrives intact from the primary; a
// FIFO in the served directory blocks nothing, and it and a missing name are refused alike; a
// short join key is refused.
func TestServeTrustBoundaries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := buildKwik(t)
	dir := t.TempDir()
	good, stale := filepath.Join(dir, "good"), filepath.Join(dir, "stale")
	for _, d := range []string{good, stale, filepath.Join(good, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const size = 4 << 20
	want := writeRandomFile(t, filepath.Join(good, "f.bin"), size, 3)
	writeRandomFile(t, filepath.Join(stale, "f.bin"), size, 4) // same size, other bytes
	if err := syscall.Mkfifo(filepath.Join(good, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{joinKeyEnv + "=a join key of 32 bytes or more!!"}
	sec := startServer(t, ctx, bin, env, "--secondary", "--dir", stale)
	prim := startServer(t, ctx, bin, env, "--primary", "--dir", good, "--secondaries", sec.addr, "--chunk-size", "262144")
	out := filepath.Join(dir, "out")
	get := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, bin, append([]string{"get", "--no-progress", "-o", out}, args...)...).CombinedOutput()
		return string(out), err
	}
	pins := prim.fingerprint + "," + sec.addr + "=" + sec.fingerprint

	// Finding 1: the replica, dialed directly, serves nothing.
	if msg, err := get("--pin", sec.fingerprint, sec.addr, "f.bin"); err == nil || !strings.Contains(msg, "KWIK_AUTH_FAILED") {
		t.Errorf("kwik get from a secondary directly: %v\n%s", err, msg)
	}
	// Finding 8: the stale replica serves nothing; the primary sends its bytes itself.
	if msg, err := get("--pin", pins, prim.addr, "f.bin"); err != nil || !strings.Contains(msg, "SHA-256 checked") {
		t.Errorf("kwik get with a stale replica: %v\n%s", err, msg)
	} else if fileSum(t, out) != want {
		t.Error("kwik get with a stale replica: the file differs")
	} else if shares := secondaryBytes(t, msg); len(shares) != 1 || shares[0] != 0 {
		t.Errorf("the stale replica brought %v MiB\n%s", shares, msg)
	}
	// Finding 9: the FIFO and a missing file read the same, and the FIFO holds nothing up
	// (the get after it completes).
	for _, name := range []string{"fifo", "missing"} {
		msg, err := get("--pin", pins, prim.addr, name)
		if err == nil || !strings.Contains(msg, name+": server: 404 Not Found") {
			t.Errorf("kwik get %s: %v\n%s", name, err, msg)
		}
	}
	// Without the secondary, the primary's own file passes the check.
	alone := startServer(t, ctx, bin, nil, "--primary", "--dir", good)
	if msg, err := get("--pin", alone.fingerprint, alone.addr, "f.bin"); err != nil || !strings.Contains(msg, "SHA-256 checked") {
		t.Errorf("kwik get from the primary alone: %v\n%s", err, msg)
	}
	// A join key too short to resist offline guessing.
	short := exec.CommandContext(ctx, bin, "serve", "--secondary", "--listen", "127.0.0.1:0", "--dir", good)
	short.Env = append(os.Environ(), joinKeyEnv+"=sixteen byte key")
	if msg, err := short.CombinedOutput(); err == nil || !strings.Contains(string(msg), "at least 32") {
		t.Errorf("kwik serve with a 16-byte key: %v\n%s", err, msg)
	}
	for _, s := range []*server{prim, sec, alone} {
		s.stop(t)
	}
}
