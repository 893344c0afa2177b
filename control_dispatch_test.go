package kwik

import (
	"errors"
	"testing"

	"github.com/kwik-go/kwik/internal/wire/pb"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// controlFramesTaken lists, by role and path kind, the control frames a path takes besides
// those every path takes (heartbeat, ack, session close): everything else is rejected.
var controlFramesTaken = map[string][]string{
	"client, primary path": {"stream_create_notification", "max_stream_data", "max_streams", "stream_reset", "stop_sending",
		"raw_packet_transmission", "add_path_request", "remove_path_request", "delegate_range", "path_token_response"},
	"client, secondary path": {"raw_packet_transmission", "delegation_done"},
	"primary": {"stream_create_notification", "max_stream_data", "max_streams", "stream_reset", "stop_sending",
		"raw_packet_transmission", "raw_packet_result", "add_path_response", "remove_path_response",
		"delegation_status", "path_status_notification", "path_token_request"},
	"secondary": {"raw_packet_transmission", "raw_packet_result", "delegation_assign", "max_stream_data", "stop_sending"},
}

// TestControlFrameOutOfPlace checks, without sockets, that every control frame a role does not
// take on a kind of path is rejected with KWIK_INVALID_FRAME before any handler runs (the
// path here has no connection, streams or delegation state for one to touch).
func TestControlFrameOutOfPlace(t *testing.T) {
	cells := []struct {
		name    string
		role    Role
		primary bool
	}{
		{"client, primary path", RoleClient, true},
		{"client, secondary path", RoleClient, false},
		{"primary", RolePrimary, true},
		{"secondary", RoleSecondary, false},
	}
	payload := (&pb.ControlFrame{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")
	if payload == nil {
		t.Fatal("ControlFrame has no payload oneof")
	}
	common := map[string]bool{"heartbeat": true, "ack": true, "session_close": true}
	for _, c := range cells {
		t.Run(c.name, func(t *testing.T) {
			taken := make(map[string]bool)
			for _, n := range controlFramesTaken[c.name] {
				taken[n] = true
			}
			p := &path{sess: &session{role: c.role}, isPrimary: c.primary, roleControl: controlHandlerFor(c.role, c.primary)}
			fields := payload.Fields()
			rejected := 0
			for i := range fields.Len() {
				fd := fields.Get(i)
				name := string(fd.Name())
				if common[name] || taken[name] {
					continue
				}
				f := &pb.ControlFrame{}
				m := f.ProtoReflect()
				m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message()))
				err := p.handleControl(f)
				if !errors.Is(err, ErrInvalidFrame) {
					t.Errorf("%s: %v, want KWIK_INVALID_FRAME", name, err)
				}
				rejected++
			}
			if want := fields.Len() - len(common) - len(taken); rejected != want {
				t.Errorf("rejected %d frames, want %d", rejected, want)
			}
			// An empty frame is out of place everywhere.
			if err := p.handleControl(&pb.ControlFrame{}); !errors.Is(err, ErrInvalidFrame) {
				t.Errorf("empty frame: %v, want KWIK_INVALID_FRAME", err)
			}
		})
	}
}
