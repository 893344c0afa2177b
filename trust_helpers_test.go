package kwik

import (
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/wire/pb"
)

// secondaryOnlyConf is a secondary's configuration as a deployment should have it.
func secondaryOnlyConf() *Config {
	c := serverConf()
	c.ListenerRole = ListenSecondary
	c.HeartbeatInterval, c.PathTimeout = 10*time.Second, time.Minute // a raw peer's silence ends nothing
	return c
}

// joinRaw joins the secondary behind ln from a raw connection, with a genuine token for path
// pathID of session sid: the attacker is a client whom its primary sent there. It returns the
// raw peer and the secondary's session.
func joinRaw(t *testing.T, ln *Listener, sid, pathID string) (*rawPeer, *session) {
	t.Helper()
	addr := ln.Addr().String()
	h := dialRaw(t, addr)
	h.openControl(t)
	h.send(&pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{
		Version: protocolVersion, SessionId: sid, PathId: pathID, TargetAddress: addr,
		Credentials: issue(t, testJoinKey, sid, pathID, addr, 10*time.Second),
	}}})
	f := h.next(t, func(f *pb.ControlFrame) bool { return f.GetAuthenticationResponse() != nil })
	if !f.GetAuthenticationResponse().GetSuccess() {
		t.Fatalf("genuine join refused: %v", f)
	}
	s, err := ln.Accept(boundContext(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return h, s.(*session)
}

// signedAssign is an assignment as the primary of session sid signs it for pathID.
func signedAssign(sid, pathID string, id, streamID, off, length uint64, request []byte) *pb.DelegationAssign {
	exp := uint64(time.Now().Add(delegationTTL).UnixNano())
	return &pb.DelegationAssign{
		DelegationId: id, LogicalStreamId: streamID, Offset: off, Length: length, Request: request, MaxOffset: off + length,
		Expiry: exp, Auth: delegationMAC(delegationKey(testJoinKey), sid, pathID, id, streamID, off, length, request, exp),
	}
}

func assignFrame(m *pb.DelegationAssign) *pb.ControlFrame {
	return &pb.ControlFrame{Payload: &pb.ControlFrame_DelegationAssign{DelegationAssign: m}}
}
