package kwik

import "github.com/kwik-go/kwik/internal/wire/pb"

// primaryControl handles the control frames the primary takes from the client: the streams'
// frames, the answers to its path requests, its delegations' outcomes, the paths' status, and
// raw data.
func (p *path) primaryControl(f *pb.ControlFrame) (bool, error) {
	if handled, err := p.streamControl(f); handled {
		return true, err
	}
	sess := p.sess
	if handled, err := p.serverRawControl(f); handled {
		return true, err
	}
	switch m := f.Payload.(type) {
	case *pb.ControlFrame_AddPathResponse:
		return true, sess.handleAddPathResponse(m.AddPathResponse)
	case *pb.ControlFrame_RemovePathResponse:
		return true, sess.handleRemovePathResponse(m.RemovePathResponse)
	case *pb.ControlFrame_DelegationStatus:
		return true, sess.handleDelegationStatus(m.DelegationStatus)
	case *pb.ControlFrame_PathStatusNotification:
		return true, sess.handlePathStatus(m.PathStatusNotification)
	case *pb.ControlFrame_PathTokenRequest:
		sess.handlePathTokenRequest(m.PathTokenRequest)
		return true, nil
	}
	return false, nil
}
