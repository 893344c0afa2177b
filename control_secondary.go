package kwik

import "github.com/kwik-go/kwik/internal/wire/pb"

// secondaryControl handles the control frames a secondary takes from the client: the
// delegations the primary signed, their credit and their cancellation, and raw data. A
// secondary has no logical streams of the client's: MaxStreamData and StopSending name the
// stream its delegations fill.
func (p *path) secondaryControl(f *pb.ControlFrame) (bool, error) {
	sess := p.sess
	if handled, err := p.serverRawControl(f); handled {
		return true, err
	}
	switch m := f.Payload.(type) {
	case *pb.ControlFrame_DelegationAssign:
		return true, sess.handleDelegationAssign(p, m.DelegationAssign)
	case *pb.ControlFrame_MaxStreamData:
		sess.handleDelegationCredit(m.MaxStreamData.LogicalStreamId, m.MaxStreamData.Maximum)
		return true, nil
	case *pb.ControlFrame_StopSending:
		sess.handleDelegationStop(m.StopSending)
		return true, nil
	}
	return false, nil
}
