package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kwik-go/kwik"
)

// options configures a server.
type options struct {
	addr          string        // the primary's UDP address
	secondaries   int           // how many secondaries to start
	secondaryHost string        // the host the secondaries listen on (port 0) and the client dials
	silent        int           // the last silent secondaries ignore prepare messages
	certFile      string        // where to write the certificate, PEM, for the client
	largeSize     int64         // bytes of large.bin
	readyTimeout  time.Duration // how long the primary waits for the secondaries' answers
	log           *slog.Logger
	kwikLog       bool // pass log to KWIK too (paths added, dead, sessions closed)
}

// server is a primary and its secondaries, one listener each, in one process. They share only
// the join key and the certificate; each has its own copy of the objects.
type server struct {
	opts        options
	log         *slog.Logger
	primary     *kwik.Listener
	secondaries []*secondary
	catalogue   map[string]spec // what the primary serves
	objects     *store          // the primary's copies
}

// secondary is one secondary server.
type secondary struct {
	ln      *kwik.Listener
	addr    string // what the primary passes to AddPath: the client dials it
	silent  bool
	objects *store
}

// newServer starts listening and writes the certificate to opts.certFile.
func newServer(opts options) (_ *server, err error) {
	if opts.secondaries < 0 || opts.silent < 0 || opts.largeSize < 0 || opts.largeSize > maxObjectSize || opts.readyTimeout <= 0 {
		return nil, errors.New("server: bad options")
	}
	if opts.log == nil {
		opts.log = slog.New(slog.DiscardHandler)
	}
	s := &server{
		opts: opts,
		log:  opts.log,
		catalogue: map[string]spec{
			"small.bin": {Size: 256 << 10, Seed: 1},
			"large.bin": {Size: opts.largeSize, Seed: 2},
		},
		objects: newStore(),
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	primaryHost, _, err := net.SplitHostPort(opts.addr)
	if err != nil {
		return nil, err
	}
	// The client checks every path's certificate against the host it dials.
	cert, certPEM, err := selfSigned([]string{"localhost", "127.0.0.1", "::1", primaryHost, opts.secondaryHost})
	if err != nil {
		return nil, err
	}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}}
	// The join key lets the secondaries accept the clients the primary sends them, and no one
	// else. Servers in separate processes would read it from a secret store.
	key := make([]byte, 32)
	rand.Read(key)
	// Each listener has its role: the primary takes no joins, a secondary opens no session
	// for a client that dials it directly (it would serve it past the primary).
	conf := &kwik.Config{JoinKey: key, ListenerRole: kwik.ListenPrimary}
	if opts.kwikLog {
		conf.Logger = opts.log
	}
	secConf := *conf
	secConf.ListenerRole = kwik.ListenSecondary

	if s.primary, err = kwik.Listen(opts.addr, tlsConf, conf); err != nil {
		return nil, err
	}
	for i := range opts.secondaries {
		ln, err := kwik.Listen(net.JoinHostPort(opts.secondaryHost, "0"), tlsConf, &secConf)
		if err != nil {
			return nil, err
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		s.secondaries = append(s.secondaries, &secondary{
			ln:      ln,
			addr:    net.JoinHostPort(opts.secondaryHost, port),
			silent:  i >= opts.secondaries-opts.silent,
			objects: newStore(),
		})
	}
	if err := writeFileAtomic(opts.certFile, certPEM); err != nil {
		return nil, err
	}
	return s, nil
}

// Addr is the primary's address.
func (s *server) Addr() string { return s.primary.Addr().String() }

// serve accepts sessions until ctx ends, then closes every session and listener and returns
// once everything it started has ended.
func (s *server) serve(ctx context.Context) error {
	var wg sync.WaitGroup
	accept := func(ln *kwik.Listener, role kwik.Role, handle func(context.Context, kwik.Session)) {
		for {
			sess, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			if sess.Role() != role { // the listener's role rules it out: never serve past it
				sess.CloseWithError(1, "wrong role")
				continue
			}
			wg.Go(func() {
				stop := context.AfterFunc(ctx, func() { sess.CloseWithError(0, "server shutting down") })
				defer stop()
				defer sess.Close()
				handle(ctx, sess)
			})
		}
	}
	for _, sec := range s.secondaries {
		wg.Go(func() {
			accept(sec.ln, kwik.RoleSecondary, func(ctx context.Context, sess kwik.Session) { sec.serveSecondary(ctx, sess, s.log) })
		})
	}
	wg.Go(func() { accept(s.primary, kwik.RolePrimary, s.servePrimary) })
	wg.Wait() // the accept loops end with ctx, the sessions are closed by then
	s.close()
	return nil
}

func (s *server) close() {
	if s.primary != nil {
		closeListener(s.primary)
	}
	for _, sec := range s.secondaries {
		closeListener(sec.ln)
	}
}

// closeListener closes ln and the sessions still in its accept queue: as with quic-go, Accept
// returns them after Close, and they would otherwise live until their clients close them.
func closeListener(ln *kwik.Listener) {
	ln.Close()
	for {
		sess, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		sess.Close()
	}
}

// selfSigned returns a new key and a self-signed certificate for hosts, and the certificate
// in PEM for the client to trust. It is for trying the example: a real server has a
// certificate from a CA its clients trust.
func selfSigned(hosts []string) (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true, // it signs itself, so the client's pool can hold it as a root
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// writeFileAtomic writes b to name so that a reader sees the old file or the new, whole.
func writeFileAtomic(name string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644) // a certificate is public
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing the certificate: %w", err)
	}
	return nil
}
