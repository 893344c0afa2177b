package kwik

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Events go to the Config's logger, and nowhere without one.
func TestLogger(t *testing.T) {
	var out syncBuffer
	conf := serverConf()
	conf.Logger = slog.New(slog.NewTextHandler(&out, nil))
	p := newPair(t, clientConf(), conf)
	ln := listen(t, serverConf())
	id, _ := addPath(t, p.server, ln, ln.Addr().String())
	p.server.Close()
	for _, want := range []string{"kwik: session started", "kwik: path added", "path=" + id, "kwik: session closed", "session=" + p.server.ID()} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, out.String())
		}
	}
}
