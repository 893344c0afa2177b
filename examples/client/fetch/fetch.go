// Package fetch is the client side of the object protocol of examples/server and
// examples/client, and the definition of its two messages, which the server uses too.
//
// One logical KWIK stream carries one object:
//
//	client → primary   a Request as one JSON line, then the client closes its side
//	primary → client   a Header as one JSON line, then Header.Size bytes of the object
//
// The client never learns which server sent which bytes: the primary delegates ranges of the
// stream to its secondaries, and the client's Read returns them in order. Only Session.Stats
// tells the paths apart.
package fetch

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kwik-go/kwik"
)

// MaxLine bounds a Request or Header line, its '\n' included.
const MaxLine = 4096

// Request names the object the client wants.
type Request struct {
	Object string `json:"object"`
}

// Header precedes the object's bytes. Error set means the primary refuses the request and
// sends nothing more.
type Header struct {
	Object string `json:"object,omitempty"`
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"` // hex digest of the Size bytes that follow
	Error  string `json:"error,omitempty"`
}

// RefusedError is what Get returns when the primary refuses the request (an unknown object).
type RefusedError struct {
	Object, Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("fetch: the server refused %q: %s", e.Object, e.Reason)
}

// Result is what Get received.
type Result struct {
	Header Header
	// Wait is from the request to the header: the primary preparing its secondaries.
	Wait time.Duration
	// Elapsed is from the header to the last byte: the transfer itself.
	Elapsed time.Duration
	// Stats is the client session's view of its paths, taken after the last byte and before
	// the session closed: each path's BytesReceived is what that server sent.
	Stats kwik.SessionStats
}

// TLSConfig returns a client configuration that trusts the certificates in the PEM file
// certFile (the server example writes its self-signed certificate there). It sets no
// ServerName: each path verifies the host of the address it dials, so the certificate must
// name the primary's and every secondary's host.
func TLSConfig(certFile string) (*tls.Config, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("fetch: %s holds no PEM certificate", certFile)
	}
	return &tls.Config{RootCAs: pool}, nil
}

// Get dials the primary at addr, asks for object on one stream, reads it to the end and checks
// it against the size and SHA-256 digest of the primary's header. It closes the session
// before returning. conf may be nil. Canceling ctx abandons the transfer.
func Get(ctx context.Context, addr string, tlsConf *tls.Config, object string, conf *kwik.Config) (*Result, error) {
	sess, err := kwik.Dial(ctx, addr, tlsConf, conf)
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	// Reads do not watch ctx; closing the session ends them.
	stop := context.AfterFunc(ctx, func() { sess.CloseWithError(1, "canceled") })
	defer stop()

	start := time.Now()
	st, err := sess.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	req, err := json.Marshal(Request{Object: object})
	if err != nil {
		return nil, err
	}
	if _, err := st.Write(append(req, '\n')); err != nil {
		return nil, err
	}
	if err := st.Close(); err != nil {
		return nil, err
	}

	r := bufio.NewReaderSize(st, MaxLine)
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			err = errors.New("header line too long")
		}
		return nil, fmt.Errorf("fetch: reading the header: %w", err)
	}
	var h Header
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, fmt.Errorf("fetch: bad header: %w", err)
	}
	wait := time.Since(start)
	if h.Error != "" {
		return nil, &RefusedError{Object: object, Reason: h.Error}
	}
	want, err := hex.DecodeString(h.SHA256)
	if err != nil || len(want) != sha256.Size || h.Size < 0 {
		return nil, fmt.Errorf("fetch: bad header %q", line)
	}

	// The object's bytes arrive from every path; this is an ordinary read loop all the same.
	sum := sha256.New()
	n, err := io.Copy(sum, r)
	if err != nil {
		return nil, fmt.Errorf("fetch: after %d bytes: %w", n, err)
	}
	res := &Result{Header: h, Wait: wait, Elapsed: time.Since(start) - wait, Stats: sess.Stats()}
	if n != h.Size {
		return res, fmt.Errorf("fetch: received %d bytes of %q, the header said %d", n, object, h.Size)
	}
	if got := sum.Sum(nil); !bytes.Equal(got, want) {
		return res, fmt.Errorf("fetch: %q corrupted: sha256 %x, the header said %x", object, got, want)
	}
	return res, nil
}
