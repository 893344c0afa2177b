package kwik

import (
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/wire"
)

// The default progress timeout: a floor, the round trips, the frames of every stream at the
// secondary's rate, a cap.
func TestDefaultProgressTimeout(t *testing.T) {
	sess := &session{conf: &Config{MaxMessageSize: 64 << 10}}
	sess.primary = &path{sess: sess} // no connection: no RTT sample yet
	p := &path{sess: sess}
	frame := float64(wire.MaxFrameData(64 << 10))
	for _, tc := range []struct {
		name    string
		streams int
		rate    float64 // bytes/s
		want    time.Duration
	}{
		{"rate unknown", 1, 0, minProgressTimeout},
		{"fast", 1, 5e6, minProgressTimeout + time.Duration(2*frame/5e6*float64(time.Second))},
		{"many streams, slow", 16, 125e3, minProgressTimeout + time.Duration(32*frame/125e3*float64(time.Second))},
		{"capped", 64, 1e3, maxDefaultProgressTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.defaultProgressTimeout(tc.streams, tc.rate); got != tc.want {
				t.Fatalf("%v, want %v", got, tc.want)
			}
		})
	}
}
