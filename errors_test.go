package kwik

import (
	"context"
	"errors"
	"testing"

	"github.com/quic-go/quic-go"
)

// TestSentinelErrors checks that the conditions a caller may handle are matched by errors.Is,
// not by their text.
func TestSentinelErrors(t *testing.T) {
	t.Run("config", func(t *testing.T) {
		for _, c := range []*Config{
			{MaxMessageSize: 100},
			{StreamReceiveWindow: -1},
			{PathRetry: RetryPolicy{Jitter: 2}},
			{QUIC: &quic.Config{RequireStreamCreditRelease: true}},
			{ListenerRole: ListenSecondary},
		} {
			if _, err := Listen("127.0.0.1:0", testTLS.server, c); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("Listen(%+v) = %v, want ErrInvalidConfig", c, err)
			}
		}
		if _, err := Dial(context.Background(), "127.0.0.1:1", nil, nil); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Dial without a tls.Config = %v, want ErrInvalidConfig", err)
		}
	})

	p := newPair(t, nil, nil) // no JoinKey on either side
	t.Run("role", func(t *testing.T) {
		err := p.client.AddPath("127.0.0.1:1")
		if !errors.Is(err, ErrNotPrimary) || !errors.Is(err, ErrWrongRole) {
			t.Errorf("client AddPath = %v, want ErrNotPrimary and ErrWrongRole", err)
		}
		if _, err := p.client.ReceiveRawData(context.Background()); !errors.Is(err, ErrWrongRole) {
			t.Errorf("client ReceiveRawData = %v, want ErrWrongRole", err)
		}
		if err := SendOrder(p.client, []byte("x"), p.server.primary.id); !errors.Is(err, ErrWrongRole) {
			t.Errorf("client SendOrder = %v, want ErrWrongRole", err)
		}
		if err := ServeFanout(context.Background(), p.server, nil); !errors.Is(err, ErrWrongRole) {
			t.Errorf("primary ServeFanout = %v, want ErrWrongRole", err)
		}
	})
	t.Run("join key", func(t *testing.T) {
		if err := p.server.AddPath("127.0.0.1:1"); !errors.Is(err, ErrNoJoinKey) {
			t.Errorf("AddPath without JoinKey = %v, want ErrNoJoinKey", err)
		}
		if err := SendOrder(p.server, []byte("x"), p.server.primary.id); !errors.Is(err, ErrNoJoinKey) {
			t.Errorf("SendOrder without JoinKey = %v, want ErrNoJoinKey", err)
		}
	})
	t.Run("arguments", func(t *testing.T) {
		if err := p.server.RemovePath(p.server.primary.id); !errors.Is(err, ErrPrimaryPath) {
			t.Errorf("RemovePath(primary) = %v, want ErrPrimaryPath", err)
		}
		st, err := p.server.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		defer st.CancelWrite(0)
		if _, err := st.WriteAt([]byte("x"), -1); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("WriteAt(-1) = %v, want ErrInvalidArgument", err)
		}
		if _, err := st.Delegate(p.server.primary.id, 0, nil); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Delegate(length 0) = %v, want ErrInvalidArgument", err)
		}
		if _, err := st.Delegate(p.server.primary.id, 10, nil); !errors.Is(err, ErrPrimaryPath) {
			t.Errorf("Delegate(primary path) = %v, want ErrPrimaryPath", err)
		}
		for _, req := range [][]byte{nil, make([]byte, 15), FanoutRequest(0, 0), FanoutRequest(-1, 10)} {
			if _, _, err := ParseFanoutRequest(req); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("ParseFanoutRequest(%x) = %v, want ErrInvalidArgument", req, err)
			}
		}
	})
}
