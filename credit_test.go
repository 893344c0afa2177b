package kwik

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// The session's budget bounds what all its streams may hold unread: ten streams whose writer
// outpaces the reader hold at most MaxSessionReceiveWindow plus their initial windows, and
// every byte still arrives once the application reads, in any order.
func TestSessionReceiveWindow(t *testing.T) {
	const (
		window  = 2 << 20
		session = 4 << 20
		streams = 10
		size    = 3 << 20
	)
	conf := &Config{StreamReceiveWindow: window, MaxSessionReceiveWindow: session, MaxIncomingStreams: streams}
	p := newPair(t, conf, nil)
	ctx := testContext(t)
	initial := p.client.conf.initialStreamWindow()
	if initial != 512<<10 {
		t.Fatalf("initial window %d, want quic-go's 512 KiB", initial)
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
			credit += st.recv.fc.Limit() - st.recv.buf.ReadOffset()
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
	// The session's budget over the stream limit: 64 MiB / 100.
	if c.StreamReceiveWindow != 32<<20 || c.MaxSessionReceiveWindow != 64<<20 || c.initialStreamWindow() != 64<<20/100 {
		t.Fatalf("defaults: %d, initial window %d", c.MaxSessionReceiveWindow, c.initialStreamWindow())
	}
	if c, _ := (&Config{MaxSessionReceiveWindow: 128 << 20, MaxIncomingStreams: 64}).populate(); c.initialStreamWindow() != 2<<20 {
		t.Fatalf("initial window of a large budget: %d", c.initialStreamWindow())
	}
	if c, err := (&Config{StreamReceiveWindow: 24 << 20}).populate(); err != nil || c.MaxSessionReceiveWindow != 48<<20 {
		t.Fatalf("default with a 24 MiB stream window: %v %v", c, err)
	}
	if c, _ := (&Config{StreamReceiveWindow: 4 << 20, MaxSessionReceiveWindow: 4 << 20, MaxIncomingStreams: 1000}).populate(); c.initialStreamWindow() != 512<<10 {
		t.Fatalf("initial window floor: %d", c.initialStreamWindow())
	}
	if _, err := (&Config{StreamReceiveWindow: 2 << 20, MaxSessionReceiveWindow: 1 << 20}).populate(); err == nil {
		t.Error("a session window below the stream window accepted")
	}
}

// A stream stalled with no credit at all takes whatever is left: credit coming back, even
// less than minGrant, must wake it, or it waits for reads of other streams that may never come.
func TestSessionCreditWakesStarvedStream(t *testing.T) {
	c := sessionCredit{max: 1 << 20}
	reader, starved := new(stream), new(stream)
	if lent, _ := c.exchange(reader, 0, 1<<20, 1); lent != 1<<20 {
		t.Fatalf("lent %d", lent)
	}
	if lent, _ := c.exchange(starved, 0, 64<<10, 1); lent != 0 {
		t.Fatalf("lent %d with nothing left", lent)
	}
	if _, wake := c.exchange(reader, 4<<10, 0, 0); !wake {
		t.Fatal("4 KiB came back and the stalled stream with no credit is not served")
	}
	c.takeStalled()
	if lent, _ := c.exchange(starved, 0, 64<<10, 1); lent != 4<<10 {
		t.Fatalf("the starved stream got %d", lent)
	}
}

// serveStalled takes a stalled stream, which ends (CancelRead) before serveStalled gets its
// lock: serving it must not lend the ended stream credit (which nothing would take back) nor
// leave it stalled.
func TestSessionCreditServeEndedStream(t *testing.T) {
	const window = 2 << 20
	conf := &Config{StreamReceiveWindow: window, MaxSessionReceiveWindow: 4 << 20, MaxIncomingStreams: 16}
	p := newPair(t, conf, nil)
	ctx := testContext(t)
	st, err := p.server.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	written := make(chan error, 1)
	go func() {
		_, err := st.Write(content(0, 4<<20))
		written <- err
	}()
	cs, err := p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(cs, make([]byte, 512<<10)); err != nil {
		t.Fatal(err)
	}
	// The window grows (as auto-tuning would have it on a slower path): the credit beyond the
	// initial window is borrowed from the session's budget.
	s := cs.(*stream)
	s.recv.mu.Lock()
	s.recv.fc.AtLeast(window)
	s.grantLocked()
	borrowed := s.recv.fc.Borrowed()
	s.recv.mu.Unlock()
	if borrowed == 0 {
		t.Fatal("the stream read past its initial window borrowed nothing")
	}
	taken := []*stream{s} // as serveStalled's takeStalled
	s.CancelRead(7)
	for _, s := range taken {
		s.serveCredit()
	}
	p.client.credit.mu.Lock()
	lent, stalled := p.client.credit.lent, len(p.client.credit.stalled)
	p.client.credit.mu.Unlock()
	if lent != 0 || stalled != 0 {
		t.Fatalf("after the only stream was canceled: %d lent, %d stalled", lent, stalled)
	}
	if err := <-written; err == nil {
		t.Fatal("write to a canceled stream succeeded")
	}
}

// As in quic-go, a stream starts with 512 KiB of credit: a peer writes a 500 KB message in
// full before the application reads a byte of it (quic-go's echo of 500 KB to a client not yet
// reading stalled at KWIK's old, smaller initial window).
func TestInitialWindowAsQUIC(t *testing.T) {
	p := newPair(t, nil, nil)
	ctx := testContext(t)
	st, err := p.server.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msg := content(3, 500_000)
	if err := st.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(msg); err != nil {
		t.Fatalf("writing 500 KB before the peer reads: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	cs, err := p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(cs)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
}
