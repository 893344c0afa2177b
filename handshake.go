package kwik

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"time"

	"github.com/kwik-go/kwik/internal/jointoken"
	"github.com/kwik-go/kwik/internal/wire"
	"github.com/kwik-go/kwik/internal/wire/pb"
	"github.com/quic-go/quic-go"
)

// Dial opens a session with the primary server at addr: the QUIC handshake, with which the
// session the primary offers arrives (0.5-RTT data: one round trip in all, as quic-go's Dial),
// and the client's authentication request, whose answer the session reads first on its control
// stream (a refusal then ends it). conf may be nil. The tls.Config is also used to join the
// secondaries the primary adds.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config, conf *Config) (Session, error) {
	c, err := conf.populate()
	if err != nil {
		return nil, err
	}
	tc, err := tlsConfig(tlsConf)
	if err != nil {
		return nil, err
	}
	// The QUIC handshake is bounded as in quic-go: by ctx and QUIC.HandshakeIdleTimeout, which
	// a lossy link does not exhaust as long as packets get through. HandshakeTimeout bounds
	// KWIK's authentication only (one round trip on the new connection).
	conn, err := quicNet.dial(ctx, addr, tc, c.QUIC)
	if err != nil {
		return nil, err
	}
	authCtx, cancel := context.WithTimeout(ctx, c.HandshakeTimeout)
	defer cancel()
	a, err := clientAuthenticate(authCtx, conn, c, &pb.AuthenticationRequest{}, nil)
	if err != nil {
		closeConnWith(conn, err)
		return nil, err
	}
	// The session's context carries ctx's values, as a quic-go connection's does.
	sess := newSession(context.WithoutCancel(ctx), RoleClient, a.sessionID, c)
	sess.tlsConf = tc
	p := newPath(sess, conn, a.pathID, addr, true, true, a.stream, a.reader, a.peer)
	p.answerDue = a.offered
	sess.start(p)
	return sess, nil
}

// quicNet is how KWIK opens its QUIC connections (Dial, and a client's joins of secondaries)
// and listeners (Listen): quic-go's DialAddr, and listenUDP, on real UDP sockets. Tests of the
// package swap it, for the length of one test, to run sessions over an in-memory network under
// testing/synctest (synctest_test.go); nothing else changes it. listen also returns what
// closes the listener's transport and socket, once the Listener and every connection it
// accepted have closed (Listener.Close).
var quicNet = struct {
	dial   func(ctx context.Context, addr string, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error)
	listen func(addr string, tlsConf *tls.Config, conf *quic.Config) (*quic.EarlyListener, func() error, error)
}{dial: quic.DialAddr, listen: listenUDP}

// listenUDP listens on a UDP socket of its own through a quic.Transport that KWIK closes
// itself, and listens early: a connection is handed over once quic-go has sent its part of
// the TLS handshake, so that the server offers its session in 0.5-RTT data (PROTOCOL.md §3).
// quic-go's ListenAddr closes the transport it made once the listener has closed and its
// connections' IDs are all gone, but one way an ID goes (retired, not expired) does not
// check, and the socket and two goroutines then outlive everything (seen once in the test
// suite's leak check).
func listenUDP(addr string, tlsConf *tls.Config, conf *quic.Config) (*quic.EarlyListener, func() error, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, nil, err
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, nil, err
	}
	tr := &quic.Transport{Conn: udp}
	closeAll := func() error { return errors.Join(tr.Close(), udp.Close()) }
	ln, err := tr.ListenEarly(tlsConf, conf)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return ln, closeAll, nil
}

// DialAddr is Dial under quic-go's name, so that porting code is a change of import.
func DialAddr(ctx context.Context, addr string, tlsConf *tls.Config, conf *Config) (Session, error) {
	return Dial(ctx, addr, tlsConf, conf)
}

// authenticated is what a successful client handshake yields.
type authenticated struct {
	sessionID, pathID string
	stream            *quic.Stream
	reader            *wire.Reader
	peer              peerParams
	// offered says that the session is the one the server offered: its answer to the
	// request is still to come on the control stream (path.readControl checks it).
	offered bool
}

// clientAuthenticate opens the control stream of a new path and authenticates: req is empty
// for a new session, and carries the session ID, path ID and join token for a secondary.
// then, if not nil, writes more frames behind the request before the answer is read (a join's
// held delegations). A new session is the one the server offers on the first stream it opens
// (serverHandshake), which reaches the client with the end of QUIC's handshake: a round trip
// sooner than the answer to the request, which the session's control stream then reads.
func clientAuthenticate(ctx context.Context, conn *quic.Conn, conf *Config, req *pb.AuthenticationRequest, then func(*quic.Stream) error) (*authenticated, error) {
	cs, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	stopWatch := watchDeadline(ctx, cs)
	defer stopWatch()
	req.Version = protocolVersion
	req.Params = conf.params()
	// A client opening a session takes its delegations on streams of their own
	// (path.readAlone), which a lost packet of the control stream does not hold up.
	req.Params.DelegationStreams = req.SessionId == ""
	if err := writeFrame(cs, &pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationRequest{AuthenticationRequest: req}}); err != nil {
		return nil, handshakeError(ctx, conn, err)
	}
	if then != nil {
		if err := then(cs); err != nil {
			return nil, handshakeError(ctx, conn, err)
		}
	}
	r := wire.NewReader(cs, conf.MaxMessageSize)
	offered := req.SessionId == ""
	var resp *pb.AuthenticationResponse
	if offered {
		resp, err = readOffer(ctx, conn, conf)
	} else {
		resp, err = readAnswer(r)
	}
	if err != nil {
		return nil, handshakeError(ctx, conn, err)
	}
	sessionID, pathID, peer, err := checkAnswer(resp)
	if err != nil {
		return nil, err
	}
	if !stopWatch() {
		return nil, context.Cause(ctx)
	}
	return &authenticated{sessionID: sessionID, pathID: pathID, stream: cs, reader: r, peer: peer, offered: offered}, nil
}

// readAnswer reads the server's answer to an authentication request.
func readAnswer(r *wire.Reader) (*pb.AuthenticationResponse, error) {
	f, err := readFrame(r)
	if err != nil {
		return nil, err
	}
	resp := f.GetAuthenticationResponse()
	if resp == nil {
		return nil, &Error{Code: CodeInvalidFrame, Message: "expected an authentication response"}
	}
	return resp, nil
}

// readOffer reads the session the server offers, on the first stream it opens.
func readOffer(ctx context.Context, conn *quic.Conn, conf *Config) (*pb.AuthenticationResponse, error) {
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	defer st.CancelRead(0)
	stop := watchDeadline(ctx, st)
	defer stop()
	return readAnswer(wire.NewReader(st, conf.MaxMessageSize))
}

// checkAnswer checks a server's answer (or offer): a refusal is the server's error.
func checkAnswer(resp *pb.AuthenticationResponse) (sessionID, pathID string, peer peerParams, err error) {
	if !resp.Success {
		code := ErrorCode(resp.ErrorCode)
		if code == 0 {
			code = CodeAuthFailed
		}
		return "", "", peer, kwikError(code, resp.ErrorMessage, true)
	}
	if !validID(resp.SessionId, 16) || !validID(resp.PathId, 8) {
		return "", "", peer, &Error{Code: CodeInvalidFrame, Message: "malformed session or path ID"}
	}
	if peer, err = parsePeerParams(resp.Params); err != nil {
		return "", "", peer, err
	}
	return resp.SessionId, resp.PathId, peer, nil
}

// serverHandshake authenticates a new connection: a client opening a session (this server
// becomes its primary), or a client joining this server to a session as a secondary.
// full reports whether the listener's accept queue is full: the server then refuses the
// session (KWIK_CONNECTION_REFUSED) rather than hold it.
//
// Before the client says which it is, the server offers it a session (offerSession), at once
// if early (conn is quic-go's early connection: the offer goes out as 0.5-RTT data), or once
// the TLS handshake has completed: a client opening a session has its answer a round trip
// sooner than if it waited for the answer to its request. A new session is the offer's; the
// server still answers the request on the control stream, as it does a join.
func serverHandshake(ctx context.Context, conn *quic.Conn, conf *Config, joins *joinGuard, full func() bool, early bool) (*session, error) {
	offer, err := offerSession(ctx, conn, conf, full, early)
	if err != nil {
		return nil, err
	}
	cs, err := conn.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	stopWatch := watchDeadline(ctx, cs)
	defer stopWatch()
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
	peer, err := parsePeerParams(req.Params)
	if err != nil {
		return refuse(CodeInvalidFrame, err.Error())
	}
	if full() {
		return refuse(CodeConnectionRefused, errServerBusy.Message)
	}
	var sess *session
	var pathID string
	join := !(req.SessionId == "" && len(req.Credentials) == 0 && req.PathId == "")
	if err := checkRole(conf.ListenerRole, join); err != nil {
		return refuse(CodeAuthFailed, err.Error())
	}
	if !join {
		if !offer.Success { // refused early for a reason that still holds (it was busy)
			return refuse(CodeConnectionRefused, errServerBusy.Message)
		}
		sess = newSession(context.WithoutCancel(conn.Context()), RolePrimary, offer.SessionId, conf)
		pathID = offer.PathId
	} else {
		entry, err := verifyJoin(conf, joins, req)
		if err != nil {
			return refuse(CodeAuthFailed, err.Error())
		}
		sess = newSession(context.WithoutCancel(conn.Context()), RoleSecondary, req.SessionId, conf)
		sess.joinState = entry
		// The entry outlives the session while what it took is unexpired.
		context.AfterFunc(sess.ctx, entry.release)
		pathID = req.PathId
	}
	resp := &pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationResponse{AuthenticationResponse: &pb.AuthenticationResponse{
		Success:   true,
		SessionId: sess.id,
		PathId:    pathID,
		Params:    conf.params(),
	}}}
	if err := writeFrame(cs, resp); err != nil {
		err = handshakeError(ctx, conn, err)
		sess.cancel(err) // never started: this releases what it holds (its join state)
		return nil, err
	}
	if !stopWatch() {
		sess.cancel(context.Cause(ctx))
		return nil, context.Cause(ctx)
	}
	sess.start(newPath(sess, conn, pathID, conn.RemoteAddr().String(), sess.role == RolePrimary, true, cs, r, peer))
	return sess, nil
}

// offerSession writes, on the first stream the server opens, the session it offers the client
// before the client asks: an AuthenticationResponse with the new session's IDs and the
// server's parameters, or a refusal when this server opens no sessions (ListenSecondary) or
// its accept queue is full. A client opening a session reads it; a client joining never opens
// the stream. Unless early, it waits for the TLS handshake to complete (a client certificate
// the server asks for has then been checked).
func offerSession(ctx context.Context, conn *quic.Conn, conf *Config, full func() bool, early bool) (*pb.AuthenticationResponse, error) {
	if !early {
		select {
		case <-conn.HandshakeComplete():
		case <-conn.Context().Done():
			return nil, closeError(context.Cause(conn.Context()))
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	offer := &pb.AuthenticationResponse{Success: true, SessionId: randomID(16), PathId: randomID(8), Params: conf.params()}
	if err := checkRole(conf.ListenerRole, false); err != nil {
		offer = &pb.AuthenticationResponse{ErrorCode: pb.ErrorCode(CodeAuthFailed), ErrorMessage: err.Error()}
	} else if full() {
		offer = &pb.AuthenticationResponse{ErrorCode: pb.ErrorCode(CodeConnectionRefused), ErrorMessage: errServerBusy.Message}
	}
	st, err := conn.OpenStream()
	if err != nil {
		if conn.Context().Err() != nil {
			return nil, handshakeError(ctx, conn, err)
		}
		// The client takes no stream of ours (a client that does not read offers may say
		// so): no offer, the request is answered as it comes.
		return offer, nil
	}
	stop := watchDeadline(ctx, st)
	defer stop()
	st.CancelRead(0) // the client sends nothing on it
	if err := writeFrame(st, &pb.ControlFrame{Payload: &pb.ControlFrame_AuthenticationResponse{AuthenticationResponse: offer}}); err != nil {
		return nil, handshakeError(ctx, conn, err)
	}
	// Its error is ignored: the offer is QUIC's to deliver, and a client that has read it
	// stops the stream (readOffer), which makes a Close that comes after fail ("close called
	// for canceled stream"). Failing the handshake for it closed sessions whose Dial had
	// returned (seen once in CI: one of 32 sessions never reached the accept queue).
	_ = st.Close()
	return offer, nil
}

// verifyJoin checks a secondary join: this server must hold the join key, the token must be
// the key's for that session, path and one of this server's addresses, unexpired, issued
// after this server started and after any token it took before for that path.
func verifyJoin(conf *Config, joins *joinGuard, req *pb.AuthenticationRequest) (*joinEntry, error) {
	if len(conf.JoinKey) == 0 {
		return nil, errors.New("this server accepts no joins (no join key)")
	}
	if !validID(req.SessionId, 16) || !validID(req.PathId, 8) {
		return nil, errors.New("malformed session or path ID")
	}
	if !targetAllowed(conf.JoinAddresses, joins.self, req.TargetAddress) {
		return nil, errors.New("join token issued for another server")
	}
	now := time.Now()
	tok, err := jointoken.Verify(conf.JoinKey, req.Credentials, req.SessionId, req.PathId, req.TargetAddress, now)
	if err != nil {
		return nil, err
	}
	if tok.Expiry.After(now.Add(conf.JoinTokenTTL + time.Minute)) {
		return nil, errors.New("join token valid for longer than this server allows")
	}
	return joins.use(req.SessionId, req.PathId, tok, now)
}

// watchDeadline makes blocking calls on cs fail once ctx ends. The function it returns stops
// watching and reports whether that happened before ctx ended: a handshake must call it, and
// give up on false, before handing cs to a session (whose reads a late deadline would break).
func watchDeadline(ctx context.Context, cs *quic.Stream) func() bool {
	stop := context.AfterFunc(ctx, func() { _ = cs.SetDeadline(time.Now()) })
	return func() bool {
		if !stop() {
			return false
		}
		_ = cs.SetDeadline(time.Time{})
		return true
	}
}

func handshakeError(ctx context.Context, conn *quic.Conn, err error) error {
	if conn.Context().Err() != nil {
		return closeError(context.Cause(conn.Context()))
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return closeError(err)
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
		// As on an established path (path.fail): the handshake's peer gets KWIK's code for
		// what it sent, not KWIK_INTERNAL.
		var tooLarge *wire.MessageTooLargeError
		switch {
		case errors.As(err, &tooLarge):
			return nil, &Error{Code: CodePacketTooLarge, Message: err.Error()}
		case errors.Is(err, wire.ErrMalformed), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return nil, &Error{Code: CodeInvalidFrame, Message: err.Error()}
		}
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
	var ke *Error
	if errors.As(err, &ke) && !ke.Remote {
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
