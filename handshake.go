package kwik

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"time"

	"github.com/kwik-go/kwik/internal/wire"
	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// Dial opens a session with the primary server at addr: QUIC handshake, control stream,
// authentication, then the session ID the primary issues. conf may be nil.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config, conf *Config) (Session, error) {
	c, err := conf.populate()
	if err != nil {
		return nil, err
	}
	tc, err := tlsConfig(tlsConf)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.HandshakeTimeout)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, tc, c.QUIC)
	if err != nil {
		return nil, err
	}
	sess, err := clientHandshake(ctx, conn, c, addr)
	if err != nil {
		closeConnWith(conn, err)
		return nil, err
	}
	return sess, nil
}

func clientHandshake(ctx context.Context, conn *quic.Conn, conf *Config, addr string) (*session, error) {
	cs, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	defer watchDeadline(ctx, cs)()
	req := &pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: &pb.AuthenticationRequest{
		Version: protocolVersion,
		Params:  conf.params(),
	}}}
	if err := writeFrame(cs, req); err != nil {
		return nil, handshakeError(ctx, conn, err)
	}
	r := wire.NewReader(cs, conf.MaxMessageSize)
	f, err := readFrame(r)
	if err != nil {
		return nil, handshakeError(ctx, conn, err)
	}
	resp := f.GetAuthenticationResponse()
	if resp == nil {
		return nil, &Error{Code: CodeInvalidFrame, Message: "expected an authentication response"}
	}
	if !resp.Success {
		code := ErrorCode(resp.ErrorCode)
		if code == 0 {
			code = CodeAuthFailed
		}
		return nil, &Error{Code: code, Message: resp.ErrorMessage, Remote: true}
	}
	if !validID(resp.SessionId, 16) || !validID(resp.PathId, 8) {
		return nil, &Error{Code: CodeInvalidFrame, Message: "malformed session or path ID"}
	}
	peer, err := parsePeerParams(resp.Params)
	if err != nil {
		return nil, err
	}
	sess := newSession(RoleClient, resp.SessionId, conf, peer)
	sess.start(newPath(sess, conn, resp.PathId, addr, true, cs, r))
	return sess, nil
}

// serverHandshake authenticates a new connection's first path. Secondary joins come with
// multi-server sessions; this version refuses them with KWIK_AUTH_FAILED.
func serverHandshake(ctx context.Context, conn *quic.Conn, conf *Config) (*session, error) {
	cs, err := conn.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	defer watchDeadline(ctx, cs)()
	r := wire.NewReader(cs, conf.MaxMessageSize)
	f, err := readFrame(r)
	if err != nil {
		return nil, handshakeError(ctx, conn, err)
	}
	req := f.GetAuthenticationRequest()
	if req == nil {
		return nil, &Error{Code: CodeInvalidFrame, Message: "expected an authentication request"}
	}
	refuse := func(code ErrorCode, msg string) (*session, error) {
		_ = writeFrame(cs, &pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationResponse{AuthenticationResponse: &pb.AuthenticationResponse{
			ErrorCode: pb.ErrorCode(code), ErrorMessage: msg,
		}}})
		return nil, &Error{Code: code, Message: msg}
	}
	if req.Version != protocolVersion {
		return refuse(CodeAuthFailed, "unsupported protocol version")
	}
	if req.SessionId != "" || len(req.Credentials) > 0 {
		return refuse(CodeAuthFailed, "secondary paths are not supported by this server")
	}
	peer, err := parsePeerParams(req.Params)
	if err != nil {
		return refuse(CodeInvalidFrame, err.Error())
	}
	sess := newSession(RolePrimary, randomID(16), conf, peer)
	pathID := randomID(8)
	resp := &pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationResponse{AuthenticationResponse: &pb.AuthenticationResponse{
		Success:   true,
		SessionId: sess.id,
		PathId:    pathID,
		Params:    conf.params(),
	}}}
	if err := writeFrame(cs, resp); err != nil {
		return nil, handshakeError(ctx, conn, err)
	}
	sess.start(newPath(sess, conn, pathID, conn.RemoteAddr().String(), true, cs, r))
	return sess, nil
}

// watchDeadline makes blocking calls on cs fail once ctx ends, and returns the function that
// stops watching and clears the deadline.
func watchDeadline(ctx context.Context, cs *quic.Stream) func() {
	stop := context.AfterFunc(ctx, func() { _ = cs.SetDeadline(time.Now()) })
	return func() {
		if !stop() {
			return // fired: the handshake failed anyway
		}
		_ = cs.SetDeadline(time.Time{})
	}
}

func handshakeError(ctx context.Context, conn *quic.Conn, err error) error {
	if conn.Context().Err() != nil {
		return closeError(context.Cause(conn.Context()))
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

func writeFrame(cs *quic.Stream, f *pb.ControlFrame) error {
	b, err := wire.AppendControlFrame(nil, f)
	if err != nil {
		return err
	}
	_, err = cs.Write(b)
	return err
}

func readFrame(r *wire.Reader) (*pb.ControlFrame, error) {
	body, err := r.Next()
	if err != nil {
		return nil, err
	}
	f := new(pb.ControlFrame)
	if err := wire.ParseControlFrame(body, f); err != nil {
		return nil, &Error{Code: CodeInvalidFrame, Message: err.Error()}
	}
	return f, nil
}

// closeConnWith closes a connection whose handshake failed, with KWIK's code when there is one.
func closeConnWith(conn *quic.Conn, err error) {
	if ke, ok := err.(*Error); ok && !ke.Remote {
		_ = conn.CloseWithError(kwikCodeBase+ApplicationErrorCode(ke.Code), ke.Message)
		return
	}
	_ = conn.CloseWithError(kwikCodeBase+ApplicationErrorCode(CodeInternal), "handshake failed")
}

func validID(id string, n int) bool {
	if len(id) != 2*n {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// DialAddr is Dial under quic-go's name, so that porting code is a change of import.
func DialAddr(ctx context.Context, addr string, tlsConf *tls.Config, conf *Config) (Session, error) {
	return Dial(ctx, addr, tlsConf, conf)
}
