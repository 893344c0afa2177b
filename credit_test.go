package kwik

import (
	"bytes"
	"io"
	"testing"
)

// The session's budget bounds what all its streams may hold unread: ten streams whose writer
// outpaces the reader hold at most MaxSessionReceiveWindow plus their initial windows, and
// every byte still arrives once the application reads, in any order.
func TestSessionReceiveWindow(t *testing.T) {
	const (
		window  = 256 << 10
		session = 1 << 20
		streams = 10
		size    = 1 << 20
	)
	conf := &Config{StreamReceiveWindow: window, MaxSessionReceiveWindow: session, MaxIncomingStreams: streams}
	p := newPair(t, conf, nil)
	ctx := testContext(t)
	initial := p.client.conf.initialStreamWindow()
	if initial != session/streams {
		t.Fatalf("initial window %d, want %d", initial, session/streams)
	}
	written := make(chan error, streams)
	for i := range streams {
		st, err := p.server.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, err := st.Write(content(int64(i)*size, size))
			if err == nil {
				err = st.Close()
			}
			written <- err
		}()
	}
	var cs []Stream
	for range streams {
		s, err := p.client.AcceptStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, s)
	}
	// Read a little of every stream, so that each asks for more credit; then nothing more.
	for _, s := range cs {
		if _, err := io.ReadFull(s, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	held := func() (credit uint64) {
		for _, s := range cs {
			st := s.(*stream)
			st.recv.mu.Lock()
			credit += st.recv.maxOffset - st.recv.buf.ReadOffset()
			st.recv.mu.Unlock()
		}
		return credit
	}
	if got, bound := held(), uint64(session+streams*initial); got > bound {
		t.Fatalf("streams hold %d bytes of credit, bound %d", got, bound)
	}
	p.client.credit.mu.Lock()
	lent := p.client.credit.lent
	p.client.credit.mu.Unlock()
	if lent > session {
		t.Fatalf("lent %d beyond the session's %d", lent, session)
	}
	// Read them all, the last first: none is starved by the others' unread bytes.
	for i := len(cs) - 1; i >= 0; i-- {
		rest, err := io.ReadAll(cs[i])
		if err != nil || !bytes.Equal(rest, content(int64(i)*size+1000, size-1000)) {
			t.Fatalf("stream %d: %d bytes, %v", i, len(rest), err)
		}
	}
	for range streams {
		if err := <-written; err != nil {
			t.Fatal(err)
		}
	}
	p.client.credit.mu.Lock()
	defer p.client.credit.mu.Unlock()
	if p.client.credit.lent != 0 || len(p.client.credit.stalled) != 0 {
		t.Fatalf("after every stream ended: %d lent, %d stalled", p.client.credit.lent, len(p.client.credit.stalled))
	}
}

func TestSessionReceiveWindowConfig(t *testing.T) {
	c, err := (&Config{}).populate()
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxSessionReceiveWindow != 16<<20 || c.initialStreamWindow() != (16<<20)/100 {
		t.Fatalf("defaults: %d, initial window %d", c.MaxSessionReceiveWindow, c.initialStreamWindow())
	}
	if c, _ := (&Config{StreamReceiveWindow: 8 << 20}).populate(); c.MaxSessionReceiveWindow != 32<<20 {
		t.Fatalf("default with an 8 MiB stream window: %d", c.MaxSessionReceiveWindow)
	}
	if c, _ := (&Config{MaxSessionReceiveWindow: 1 << 20, MaxIncomingStreams: 1000}).populate(); c.initialStreamWindow() != 64<<10 {
		t.Fatalf("initial window floor: %d", c.initialStreamWindow())
	}
	if _, err := (&Config{StreamReceiveWindow: 2 << 20, MaxSessionReceiveWindow: 1 << 20}).populate(); err == nil {
		t.Error("a session window below the stream window accepted")
	}
}
