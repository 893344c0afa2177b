package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kwik-go/kwik/internal/selfsigned"
)

// joinKeyEnv names the environment variable that holds the join key when no file does.
const joinKeyEnv = "KWIK_JOIN_KEY"

// minJoinKey is the shortest join key kwik serve takes.
const minJoinKey = 32

// serverTLS loads the certificate and key from files, or, when both are empty, generates a
// self-signed certificate for hosts. It returns the certificate's SHA-256 fingerprint, which
// clients of a self-signed server pin with `kwik get --pin`.
func serverTLS(certFile, keyFile string, hosts []string) (*tls.Config, string, error) {
	var cert tls.Certificate
	var err error
	switch {
	case certFile == "" && keyFile == "":
		cert, err = selfsigned.Certificate(hosts, 365*24*time.Hour)
	case certFile == "" || keyFile == "":
		return nil, "", errors.New("--cert and --key go together")
	default:
		cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	}
	if err != nil {
		return nil, "", err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, selfsigned.Fingerprint(cert.Certificate[0]), nil
}

// clientTLS trusts the certificates in caFile, or exactly the certificates whose SHA-256
// fingerprints are pinned (every server of a session must match one), or else the system's roots.
// The server name is each address's host unless serverName is set.
func clientTLS(caFile string, pins []string, serverName string) (*tls.Config, error) {
	conf := &tls.Config{ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", caFile)
		}
	}
	if len(pins) > 0 {
		want := make([]string, len(pins))
		for i, p := range pins {
			want[i] = strings.ToLower(strings.ReplaceAll(p, ":", ""))
		}
		// The pin replaces chain verification: a pinned certificate is trusted as it is.
		conf.InsecureSkipVerify = true
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			if fp := selfsigned.Fingerprint(cs.PeerCertificates[0].Raw); !slices.Contains(want, fp) {
				return fmt.Errorf("server certificate %s is not pinned", fp)
			}
			return nil
		}
	}
	return conf, nil
}

// joinKey reads the key that a primary and its secondaries share from file, or else from the
// environment. Surrounding white space is not part of it.
func joinKey(file string) ([]byte, error) {
	var key []byte
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		key = bytes.TrimSpace(b)
	} else {
		key = bytes.TrimSpace([]byte(os.Getenv(joinKeyEnv)))
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("no join key: give --join-key-file or set %s", joinKeyEnv)
	}
	// A token a client receives lets it test guesses of the key offline, as fast as it can
	// compute HMACs: the key must be too long to guess (32 random bytes, hex or base64 encoded,
	// as the README shows).
	if len(key) < minJoinKey {
		return nil, fmt.Errorf("join key of %d bytes: use at least %d random bytes", len(key), minJoinKey)
	}
	return key, nil
}
