package kwik

import "github.com/kwik-go/kwik/internal/wire/pb"

// clientPrimaryControl handles the control frames a client takes from the primary: the
// streams' frames, and the primary's orders (join, remove, delegate, tokens to rejoin, raw
// data to relay).
func (p *path) clientPrimaryControl(f *pb.ControlFrame) (bool, error) {
	if handled, err := p.streamControl(f); handled {
		return true, err
	}
	sess := p.sess
	switch m := f.Payload.(type) {
	case *pb.ControlFrame_RawPacketTransmission:
		return true, sess.relayRaw(p, m.RawPacketTransmission)
	case *pb.ControlFrame_AddPathRequest:
		sess.join(m.AddPathRequest)
		return true, nil
	case *pb.ControlFrame_RemovePathRequest:
		sess.removePath(m.RemovePathRequest)
		return true, nil
	case *pb.ControlFrame_DelegateRange:
		return true, sess.handleDelegateRange(m.DelegateRange)
	case *pb.ControlFrame_PathTokenResponse:
		sess.handlePathTokenResponse(m.PathTokenResponse)
		return true, nil
	}
	return false, nil
}

// clientSecondaryControl handles the control frames a client takes from a secondary: the end
// of its delegated ranges, and raw data to relay.
func (p *path) clientSecondaryControl(f *pb.ControlFrame) (bool, error) {
	sess := p.sess
	switch m := f.Payload.(type) {
	case *pb.ControlFrame_RawPacketTransmission:
		return true, sess.relayRaw(p, m.RawPacketTransmission)
	case *pb.ControlFrame_DelegationDone:
		return true, sess.handleDelegationDone(p, m.DelegationDone)
	}
	return false, nil
}
