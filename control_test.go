package kwik

import (
	"testing"

	"github.com/kwik-go/kwik/internal/wire/pb"
)

// The control writer ends on a queue overflow (or a write error) as well as with its path:
// whatever the end, the frames flush waits on are released, then and afterwards, so that
// closeGracefully never waits on a writer that is gone.
func TestControlFlushAfterWriterEnds(t *testing.T) {
	p := newPair(t, nil, nil)
	ctx := testContext(t)
	w := p.client.primary.ctrl
	w.mu.Lock()
	w.overflow = true // as queue does when the peer reads nothing
	w.mu.Unlock()
	hb := func() *pb.ControlFrame {
		return &pb.ControlFrame{Payload: &pb.ControlFrame_Heartbeat{Heartbeat: &pb.Heartbeat{}}}
	}
	for i, written := range []<-chan struct{}{w.flush(hb()), nil} {
		if written == nil {
			select {
			case <-p.client.ctx.Done():
			case <-ctx.Done():
				t.Fatal("the overflow did not end the session")
			}
			p.client.wg.Wait() // the writer has stopped
			written = w.flush(hb())
		}
		select {
		case <-written:
		case <-ctx.Done():
			t.Fatalf("flush %d: never released", i)
		}
	}
}
