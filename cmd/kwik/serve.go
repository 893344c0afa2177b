package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kwik-go/kwik"
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
		Long: `serve serves the files of a directory to kwik get.

A primary adds every secondary of --secondaries to each client's session and has them serve
byte ranges of the files (kwik.Fanout); a secondary serves the ranges it is given from its own
copy of the same directory (a replica: same names, same bytes). A secondary whose file has not
the primary's size serves nothing, and the primary sends those bytes itself.

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

	srv := &fileServer{root: root, secondaries: o.secondaries, log: logger, ranges: make(chan struct{}, maxRanges), chunkSize: o.chunkSize}
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
		wg.Go(func() {
			// An interrupted server closes its sessions; so does the end of the session's work.
			stop := context.AfterFunc(ctx, func() { sess.Close() })
			defer stop()
			if o.primary {
				srv.primarySession(ctx, sess)
			} else {
				srv.secondarySession(ctx, sess)
			}
		})
	}
}

// fileServer serves the files under root, as a primary or as a secondary.
type fileServer struct {
	root        *os.Root
	secondaries []string
	log         *slog.Logger
	ranges      chan struct{} // secondary: a slot per range served at once, in all sessions
	chunkSize   int64         // primary: FanoutOptions.ChunkSize

	digests struct { // primary: the files' SHA-256, computed once per version of a file
		mu sync.Mutex
		m  map[string]fileDigest
	}
}

// fileDigest is the SHA-256 of a file as it was at a size and modification time.
type fileDigest struct {
	size  int64
	mtime time.Time
	sum   [sha256.Size]byte
}

// maxDigests bounds the digests a primary remembers.
const maxDigests = 1024

// digest returns the SHA-256 of the file f opened as name, from the cache when the file has
// not changed since (same size and modification time).
func (s *fileServer) digest(name string, f *os.File) ([sha256.Size]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	s.digests.mu.Lock()
	d, ok := s.digests.m[name]
	s.digests.mu.Unlock()
	if ok && d.size == fi.Size() && d.mtime.Equal(fi.ModTime()) {
		return d.sum, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return [sha256.Size]byte{}, err
	}
	d = fileDigest{size: fi.Size(), mtime: fi.ModTime()}
	h.Sum(d.sum[:0])
	s.digests.mu.Lock()
	if s.digests.m == nil || len(s.digests.m) >= maxDigests {
		s.digests.m = make(map[string]fileDigest)
	}
	s.digests.m[name] = d
	s.digests.mu.Unlock()
	return d.sum, nil
}

const (
	// requestTimeout bounds how long a peer may take to send its request line.
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

// primarySession adds the secondaries to a client's session and answers its GETs.
func (s *fileServer) primarySession(ctx context.Context, sess kwik.Session) {
	// The paths join while the client sends its first request; a GET waits for them (for a
	// bounded time: a secondary that does not answer is not worth the client's wait).
	joined := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, addr := range s.secondaries {
			wg.Go(func() {
				if err := sess.AddPath(addr); err != nil {
					s.log.Warn("secondary not added", "session", sess.ID(), "address", addr, "err", err)
				}
			})
		}
		wg.Wait()
		close(joined)
	}()
	serveStreams(ctx, sess, func(st kwik.Stream) { s.serveGet(ctx, sess, st, joined) })
}

// serveStreams handles every stream the session accepts, each on its own goroutine, and
// returns once the session has ended and every handler has returned.
func serveStreams(ctx context.Context, sess kwik.Session, handle func(kwik.Stream)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := sess.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Go(func() { handle(st) })
	}
}

func (s *fileServer) serveGet(ctx context.Context, sess kwik.Session, st kwik.Stream, joined <-chan struct{}) {
	defer st.Close()
	fail := func(err error) {
		s.log.Info("request refused", "session", sess.ID(), "err", err)
		fmt.Fprintf(st, "ERR %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	}
	st.SetReadDeadline(time.Now().Add(requestTimeout))
	line, err := readLine(st)
	if err != nil {
		fail(fmt.Errorf("request: %w", err))
		return
	}
	req, err := parseGet(line)
	if err != nil {
		fail(err)
		return
	}
	f, size, err := s.open(req.name)
	if err != nil {
		fail(err)
		return
	}
	defer f.Close()
	if req.offset > size {
		fail(fmt.Errorf("offset %d beyond the %d bytes of %s", req.offset, size, req.name))
		return
	}
	sum, err := s.digest(req.name, f)
	if err != nil {
		fail(fmt.Errorf("%s: cannot read it", req.name))
		return
	}
	if _, err := fmt.Fprintf(st, "OK %d %x\n", size, sum); err != nil {
		return
	}
	select {
	case <-joined:
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
		return
	}
	var ids []string
	for _, p := range sess.GetActivePaths() {
		if !p.IsPrimary {
			ids = append(ids, p.PathID)
		}
	}
	n := size - req.offset
	start := time.Now()
	res, err := kwik.Fanout(ctx, st, io.NewSectionReader(f, req.offset, n), n, ids, &kwik.FanoutOptions{
		ChunkSize: s.chunkSize,
		Request: func(off, n int64) []byte {
			return []byte(rangeRequest{offset: req.offset + off, n: n, size: size, name: req.name}.String())
		},
	})
	if err != nil {
		s.log.Warn("transfer failed", "session", sess.ID(), "file", req.name, "err", err)
		st.CancelWrite(1)
		return
	}
	s.log.Info("served", "session", sess.ID(), "file", req.name, "bytes", n, "elapsed", time.Since(start),
		"by_path", res.Bytes, "refilled", res.Refilled)
}

// secondarySession answers the ranges the primary delegates to this server, at most
// rangesPerSession at once (and maxRanges in all sessions).
func (s *fileServer) secondarySession(ctx context.Context, sess kwik.Session) {
	own := make(chan struct{}, rangesPerSession)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case own <- struct{}{}:
		case <-ctx.Done():
			return
		}
		select {
		case s.ranges <- struct{}{}:
		case <-ctx.Done():
			return
		case <-sess.Context().Done():
			return
		}
		st, err := sess.AcceptStream(ctx)
		if err != nil {
			<-s.ranges
			return
		}
		wg.Go(func() {
			defer func() { <-s.ranges; <-own }()
			s.serveRange(sess, st)
		})
	}
}

func (s *fileServer) serveRange(sess kwik.Session, st kwik.Stream) {
	// Closing early, or without a byte, tells the primary what is missing: it sends it itself.
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(requestTimeout))
	line, err := readLine(st)
	if err != nil {
		s.log.Warn("bad delegation request", "session", sess.ID(), "err", err)
		return
	}
	req, err := parseRange(line)
	if err != nil {
		s.log.Warn("bad delegation request", "session", sess.ID(), "err", err)
		return
	}
	f, size, err := s.open(req.name)
	if err != nil {
		s.log.Warn("cannot serve a range", "session", sess.ID(), "err", err)
		return
	}
	defer f.Close()
	if size != req.size {
		s.log.Warn("replica differs from the primary's file", "file", req.name, "size", size, "primary's", req.size)
		return
	}
	if _, err := kwik.CopyWithIdleTimeout(st, io.NewSectionReader(f, req.offset, req.n), idleTimeout); err != nil {
		s.log.Info("range not served whole", "session", sess.ID(), "file", req.name, "err", err)
	}
}

// open opens a regular file under the served directory and returns its size. Anything else
// (a FIFO, whose open would block an OS thread until a writer came; a device; a directory) is
// refused before it is opened, and every refusal reads the same, so that a client learns
// nothing of which directories exist.
func (s *fileServer) open(name string) (*os.File, int64, error) {
	notFound := fmt.Errorf("%s: no such file", name)
	if fi, err := s.root.Stat(name); err != nil || !fi.Mode().IsRegular() {
		return nil, 0, notFound
	}
	// Non-blocking, should the name have become a FIFO since: open then returns at once.
	f, err := s.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, notFound
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, notFound
	}
	return f, fi.Size(), nil
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
