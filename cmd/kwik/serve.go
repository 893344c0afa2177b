package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kwik-go/kwik"
	"github.com/kwik-go/kwik/kwikhttp"
)

type serveOptions struct {
	primary, secondary bool
	listen, dir        string
	secondaries        []string
	certFile, keyFile  string
	hosts              []string
	joinKeyFile        string
	publicAddrs        []string
	chunkSize          int64
	verbose            bool
}

func serveCommand() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve (--primary [--secondaries host:port,...] | --secondary) --dir DIR",
		Short: "Serve a directory: as a primary, through its secondaries too; as a secondary, a replica",
		Long: `serve serves the files of a directory over HTTP on KWIK (http.FileServer over kwikhttp:
directory listings, conditional and Range requests), to kwik get or any http.Client with a
kwikhttp.Transport.

A primary adds every secondary of --secondaries to a client's session at its first large
download and has them serve byte ranges of the files (kwik.Fanout); a secondary serves the
ranges it is given from its own copy of the same directory (a replica: same names, same
bytes). Every file carries its SHA-256 (as its ETag and a Repr-Digest header): a secondary
whose copy differs serves nothing of it, and the primary sends those bytes itself.

TLS: --cert and --key, or else a self-signed certificate generated at start for --hosts; its
SHA-256 fingerprint is printed, for clients to pin (kwik get --pin). The primary and its
secondaries share a join key, read from --join-key-file or the ` + joinKeyEnv + ` environment
variable (at least 32 bytes, random: see README). A secondary listens for joins only: a client
cannot open a session with it directly. It takes join tokens issued for --listen or one of
--public-addr (the addresses its primaries give in --secondaries, when a relay or NAT is in
between). The server runs until interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runServe(cmd.Context(), o, cmd.OutOrStdout()) },
	}
	f := cmd.Flags()
	f.BoolVar(&o.primary, "primary", false, "serve as a primary")
	f.BoolVar(&o.secondary, "secondary", false, "serve as a secondary")
	f.StringVar(&o.listen, "listen", "127.0.0.1:4433", "UDP address to listen on")
	f.StringVar(&o.dir, "dir", "", "directory to serve (required)")
	f.StringSliceVar(&o.secondaries, "secondaries", nil, "addresses of the secondaries (primary only)")
	f.StringVar(&o.certFile, "cert", "", "TLS certificate file (PEM)")
	f.StringVar(&o.keyFile, "key", "", "TLS key file (PEM)")
	f.StringSliceVar(&o.hosts, "hosts", []string{"localhost", "127.0.0.1", "::1"}, "names and addresses of a generated certificate")
	f.StringVar(&o.joinKeyFile, "join-key-file", "", "file holding the join key (else $"+joinKeyEnv+")")
	f.StringSliceVar(&o.publicAddrs, "public-addr", nil, "addresses under which primaries reach this secondary, if not --listen")
	f.Int64Var(&o.chunkSize, "chunk-size", 0, "fixed size of the pieces delegated to secondaries (0: sized from their measured rates)")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "log sessions, paths and delegations")
	return cmd
}

func runServe(ctx context.Context, o serveOptions, stdout io.Writer) error {
	if o.primary == o.secondary {
		return errors.New("serve: give exactly one of --primary and --secondary")
	}
	if o.secondary && len(o.secondaries) > 0 {
		return errors.New("serve: --secondaries is for a primary")
	}
	if o.dir == "" {
		return errors.New("serve: --dir is required")
	}
	root, err := os.OpenRoot(o.dir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer root.Close()
	var key []byte
	if o.secondary || len(o.secondaries) > 0 {
		if key, err = joinKey(o.joinKeyFile); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	} else {
		key = make([]byte, 32) // a primary alone signs no token anyone checks
		rand.Read(key)
	}
	tlsConf, fingerprint, err := serverTLS(o.certFile, o.keyFile, o.hosts)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	conf := &kwik.Config{JoinKey: key, Logger: logger, ListenerRole: kwik.ListenPrimary}
	want := kwik.RolePrimary
	if o.secondary {
		conf.ListenerRole, want = kwik.ListenSecondary, kwik.RoleSecondary
		// With port 0, the address the system picked counts too (Listener.Addr).
		conf.JoinAddresses = append([]string{o.listen}, o.publicAddrs...)
	}
	ln, err := kwik.Listen(o.listen, tlsConf, conf)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer closeListener(ln)
	role := "secondary"
	if o.primary {
		role = "primary"
	}
	fmt.Fprintf(stdout, "kwik serve: %s listening on %s, serving %s\n", role, ln.Addr(), o.dir)
	if o.certFile == "" {
		fmt.Fprintf(stdout, "certificate: self-signed for %s, sha256 %s\n", strings.Join(o.hosts, ","), fingerprint)
	} else {
		fmt.Fprintf(stdout, "certificate: %s, sha256 %s\n", o.certFile, fingerprint)
	}
	if o.primary && len(o.secondaries) > 0 {
		fmt.Fprintf(stdout, "secondaries: %s\n", strings.Join(o.secondaries, ", "))
	}

	files := newFileHandler(root)
	srv := &kwikhttp.Server{
		Handler:     files,
		Secondaries: o.secondaries,
		Logger:      logger,
		// The bounds of issue 13: a request's head within requestTimeout, no transfer that
		// makes no progress for idleTimeout, at most rangesPerSession ranges of a session
		// (maxRanges in all) served at once by a secondary.
		ReadHeaderTimeout: requestTimeout,
		IdleTimeout:       idleTimeout,
		MaxDelegations:    rangesPerSession,
		MaxRanges:         maxRanges,
	}
	if o.chunkSize > 0 {
		srv.Fanout = &kwik.FanoutOptions{ChunkSize: o.chunkSize}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		sess, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted
			}
			return fmt.Errorf("serve: %w", err)
		}
		if sess.Role() != want { // the listener's role makes this impossible: never serve past it
			sess.CloseWithError(1, "wrong role")
			continue
		}
		// An interrupted server closes its sessions (ServeSession ends with ctx).
		wg.Go(func() { srv.ServeSession(ctx, sess) })
	}
}

const (
	// requestTimeout bounds how long a peer may take to send its request's head.
	requestTimeout = 10 * time.Second
	// idleTimeout ends a transfer whose writes make no progress for that long: a client that
	// withholds credit holds no file, goroutine or buffer for longer.
	idleTimeout = 30 * time.Second
	// maxRanges bounds the ranges a secondary serves at once, over all its sessions (each holds
	// an open file and a buffer); rangesPerSession, those of one session. Further delegations
	// wait in the session (KWIK bounds how many, see docs/PROTOCOL.md section 15).
	maxRanges        = 256
	rangesPerSession = 16
)

// fileHandler is http.FileServer over the served directory, whose files carry their SHA-256:
// as a strong ETag, so that a secondary's copy is used only if it has the primary's bytes
// (whatever its modification time), and as a Repr-Digest, which kwik get checks.
type fileHandler struct {
	root  *os.Root
	files http.Handler

	digests struct { // the files' SHA-256, computed once per version of a file
		mu sync.Mutex
		m  map[string]*fileDigest
	}
}

func newFileHandler(root *os.Root) *fileHandler {
	return &fileHandler{root: root, files: http.FileServer(rootFS{root})}
}

func (h *fileHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/"); name != "" {
		if sum, ok := h.digest(name); ok {
			w.Header().Set("Etag", `"sha256-`+hex.EncodeToString(sum[:])+`"`)
			w.Header().Set("Repr-Digest", kwikhttp.SHA256Field(sum[:]))
		}
	}
	h.files.ServeHTTP(w, r)
}

// fileDigest is the SHA-256 of a file as it was at a size and modification time; ready is
// closed once it is known (one computation per version, whatever the requests at once).
type fileDigest struct {
	size  int64
	mtime time.Time
	ready chan struct{}
	sum   [sha256.Size]byte
	ok    bool
}

// maxDigests bounds the digests a server remembers.
const maxDigests = 1024

// digest returns the SHA-256 of the regular file name, from the cache when the file has not
// changed since (same size and modification time); false for anything else.
func (h *fileHandler) digest(name string) ([sha256.Size]byte, bool) {
	f, fi, err := openRegular(h.root, name)
	if err != nil {
		return [sha256.Size]byte{}, false
	}
	defer f.Close()
	h.digests.mu.Lock()
	d, ok := h.digests.m[name]
	if !ok || d.size != fi.Size() || !d.mtime.Equal(fi.ModTime()) {
		if h.digests.m == nil || len(h.digests.m) >= maxDigests {
			h.digests.m = make(map[string]*fileDigest)
		}
		d = &fileDigest{size: fi.Size(), mtime: fi.ModTime(), ready: make(chan struct{})}
		h.digests.m[name] = d
		h.digests.mu.Unlock()
		hash := sha256.New()
		if _, err := io.Copy(hash, io.NewSectionReader(f, 0, fi.Size())); err == nil {
			hash.Sum(d.sum[:0])
			d.ok = true
		} else {
			h.digests.mu.Lock()
			if h.digests.m[name] == d {
				delete(h.digests.m, name)
			}
			h.digests.mu.Unlock()
		}
		close(d.ready)
		return d.sum, d.ok
	}
	h.digests.mu.Unlock()
	<-d.ready
	return d.sum, d.ok
}

// rootFS is the served directory as an http.FileSystem: nothing outside it (os.Root), and
// only regular files and directories. Anything else (a FIFO, whose open would block an OS
// thread until a writer came; a device) does not exist, and every refusal reads the same, so
// that a client learns nothing of what is there.
type rootFS struct{ root *os.Root }

func (fsys rootFS) Open(name string) (http.File, error) {
	name = strings.TrimPrefix(name, "/")
	if name == "" {
		name = "."
	}
	if fi, err := fsys.root.Stat(name); err != nil || fi.IsDir() {
		if err != nil {
			return nil, fs.ErrNotExist
		}
		return fsys.root.Open(name)
	}
	f, _, err := openRegular(fsys.root, name)
	return f, err
}

// openRegular opens the regular file name under root, or fails with fs.ErrNotExist.
func openRegular(root *os.Root, name string) (*os.File, fs.FileInfo, error) {
	if fi, err := root.Stat(name); err != nil || !fi.Mode().IsRegular() {
		return nil, nil, fs.ErrNotExist
	}
	// Non-blocking, should the name have become a FIFO since: open then returns at once.
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fs.ErrNotExist
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fs.ErrNotExist
	}
	return f, fi, nil
}

// closeListener closes ln and the sessions still in its accept queue, which would otherwise
// live until their peers close them or time out (as quic-go's queued connections do).
func closeListener(ln *kwik.Listener) {
	ln.Close()
	for {
		s, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		s.Close()
	}
}
