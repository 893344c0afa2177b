// Package jointoken issues and checks the tokens with which a client joins a secondary server
// to a KWIK session. A token is issued (8 bytes) || expiry (8 bytes), both Unix nanoseconds
// big endian, followed by HMAC-SHA256(key, "kwik-join-v2" | len+session ID | len+path ID |
// len+target | issued | expiry), where target is the address the primary asked the client to
// join: a token for one secondary does not verify at another that knows its own addresses.
// The primary and its secondaries share the key. Replay protection is the secondary's (it
// keeps, per session and path, the issue time of the last token it accepted); this package
// only says whether a token is the key's for those claims and unexpired.
package jointoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"
)

// Size is a token's length: an 8-byte issue time, an 8-byte expiry and an HMAC-SHA256.
const Size = 16 + sha256.Size

// Why Verify refused a token.
var (
	ErrNoKey     = errors.New("jointoken: no join key configured")
	ErrMalformed = errors.New("jointoken: malformed token")
	ErrForged    = errors.New("jointoken: token does not match (wrong key, session, path or secondary)")
	ErrExpired   = errors.New("jointoken: token expired")
)

func mac(key []byte, sessionID, pathID, target string, issued, expiry uint64) []byte {
	h := hmac.New(sha256.New, key)
	var n [8]byte
	h.Write([]byte("kwik-join-v2"))
	for _, s := range []string{sessionID, pathID, target} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	binary.BigEndian.PutUint64(n[:], issued)
	h.Write(n[:])
	binary.BigEndian.PutUint64(n[:], expiry)
	h.Write(n[:])
	return h.Sum(nil)
}

// Token is what a verified token claims besides its IDs.
type Token struct {
	Issued, Expiry time.Time
}

// Issue returns a token for pathID of sessionID, for the secondary the client reaches at
// target, issued at issued and valid until expiry.
func Issue(key []byte, sessionID, pathID, target string, issued, expiry time.Time) ([]byte, error) {
	if len(key) == 0 {
		return nil, ErrNoKey
	}
	// Nanoseconds: two tokens for one path (a join, then a rejoin after it died) differ even
	// when issued within the same second, and the later one has the later issue time.
	iss, exp := uint64(issued.UnixNano()), uint64(expiry.UnixNano())
	tok := binary.BigEndian.AppendUint64(make([]byte, 0, Size), iss)
	tok = binary.BigEndian.AppendUint64(tok, exp)
	return append(tok, mac(key, sessionID, pathID, target, iss, exp)...), nil
}

// Verify checks a token for pathID of sessionID and target at time now.
func Verify(key, token []byte, sessionID, pathID, target string, now time.Time) (Token, error) {
	if len(key) == 0 {
		return Token{}, ErrNoKey
	}
	if len(token) != Size {
		return Token{}, ErrMalformed
	}
	iss, exp := binary.BigEndian.Uint64(token[:8]), binary.BigEndian.Uint64(token[8:16])
	if !hmac.Equal(token[16:], mac(key, sessionID, pathID, target, iss, exp)) {
		return Token{}, ErrForged
	}
	if iss > 1<<63-1 || exp > 1<<63-1 || iss > exp {
		return Token{}, ErrMalformed
	}
	t := Token{Issued: time.Unix(0, int64(iss)), Expiry: time.Unix(0, int64(exp))}
	if !now.Before(t.Expiry) {
		return Token{}, ErrExpired
	}
	return t, nil
}
