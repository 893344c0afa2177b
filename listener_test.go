package kwik

import (
	"io"
	"net"
	"testing"
	"time"
)

// Closing a Listener leaves the sessions it accepted open, as quic-go's does, and frees its
// socket once the last of them has ended: the port can be bound again.
func TestListenerCloseReleasesSocket(t *testing.T) {
	p := newPair(t, nil, nil)
	addr := p.ln.Addr().(*net.UDPAddr)
	if err := p.ln.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	st, err := p.client.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("after the listener closed")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	sst, err := p.server.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(sst); err != nil || string(b) != "after the listener closed" {
		t.Fatalf("the accepted session read %q, %v", b, err)
	}
	if c, err := net.ListenUDP("udp", addr); err == nil {
		c.Close()
		t.Fatal("the listener's socket was freed while a session it accepted was open")
	}
	p.client.Close()
	p.server.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c, err := net.ListenUDP("udp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the listener's socket is still bound 10 s after its last session ended: %v", err)
		}
	}
}
