// Package kwikhttp carries net/http over KWIK: any http.Handler served by a primary and its
// secondaries at once, any http.Client downloading from them.
//
// # Usage
//
// A client replaces its transport; URLs keep the https scheme (KWIK always runs over TLS):
//
//	client := &http.Client{Transport: &kwikhttp.Transport{TLSClientConfig: tlsConf}}
//	resp, err := client.Get("https://primary.example:4433/big.iso")
//
// A primary serves its handler on a KWIK listener and names its secondaries; each secondary
// serves its own copy of the content with its own handler, on a listener of its own:
//
//	ln, _ := kwik.Listen(":4433", tlsConf, &kwik.Config{JoinKey: key, ListenerRole: kwik.ListenPrimary})
//	srv := &kwikhttp.Server{Handler: http.FileServer(http.Dir("/srv")), Secondaries: []string{"s1:4433", "s2:4433"}}
//	srv.Serve(ln)
//
//	ln, _ := kwik.Listen(":4433", tlsConf, &kwik.Config{JoinKey: key, ListenerRole: kwik.ListenSecondary})
//	(&kwikhttp.Server{Handler: http.FileServer(http.Dir("/srv"))}).Serve(ln) // on s1, s2
//
// # The exchange
//
// Each request travels on a logical stream of its own, in HTTP/1.1 message syntax (the
// standard library's Request.Write and ReadResponse): the request, then the client closes its
// side; the response, then the server closes its side. A body without Content-Length ends with
// the stream; a body cut short (a handler that panics, a failed transfer) resets the stream,
// so the client's Read fails instead of returning io.EOF.
//
// # Fan-out
//
// A primary fans out a response body when it is of known size and large: a GET answered
// with 200 or 206 (a single range) whose Content-Length is at least Server.FanoutThreshold,
// that carries a validator (a strong ETag, or else Last-Modified) and no Content-Encoding,
// and whose body the handler sends with io.Copy from a seekable source, as http.ServeContent,
// http.FileServer and ServeContent do. The primary writes the status line and headers itself,
// then kwik.Fanout spreads the body over the session's secondaries. Each delegation's request
// is itself an HTTP/1.1 request: the method, the URL, the Host, a Range for the delegated
// bytes, an If-Range with the primary's validator and a Kwik-Representation-Length header with
// the size of the whole representation. A secondary answers by calling its handler with that
// request and streaming the 206 body into the delegated range (headers are dropped). A
// replica whose answer is not exactly that range of a representation with the same validator
// and size serves nothing, and the primary sends those bytes itself. Other responses (small,
// streamed, of unknown size, or from handlers that write them piece by piece) are the
// primary's alone.
//
// Which secondaries join a client's session, and when, is the primary's policy:
// Server.Secondaries are added (kwik.Session.JoinPath) at the session's first response that
// would be fanned out, not before, so that a client that only asks for small things never
// costs the secondaries a connection. That response does not wait for them: its body starts
// from the primary at once, and each secondary is given pieces of it at once, which the
// client holds until it has joined (a round trip sooner than after the join) and the primary
// sends again if the join is late or fails.
//
// # Integrity
//
// A secondary is trusted for liveness, not content. kwik.Fanout gives the client the SHA-256
// of each block of every delegated range, read from the primary's own source: a replica with
// the same size and validators and other bytes (stale, or lying) has its ranges fail with
// KWIK_DIGEST_MISMATCH before the reader sees a byte of them, and the primary sends them
// itself. End to end, a response may also carry a Content-Digest (RFC 9530) of its body, or,
// when it is a 200 without content coding, a Repr-Digest of the representation: the
// Transport checks a sha-256 one as the body is read, and a body that does not match (the
// primary's own bytes differ from its digest) ends with an error that errors.Is
// ErrDigestMismatch instead of io.EOF.
//
// # Limitations
//
//   - Delegations carry the URL and Host of the client's request but none of its other
//     headers (credentials, cookies): a replica must serve the content without them (the
//     primary has already authorized the request).
//   - No keep-alive, pipelining, HTTP upgrades or trailers on responses; 1xx informational
//     responses are skipped by the Transport.
package kwikhttp
