// Package jointoken issues and checks the tokens with which a client joins a secondary server
// to a KWIK session. A token is expiry (8 bytes, Unix nanoseconds, big endian) followed by
// HMAC-SHA256(key, "kwik-join-v1" | len+session ID | len+path ID | expiry). The primary and its
// secondaries share the key; a secondary accepts a token once (a replay cache keeps it until
// it expires) and only for the session and path it names.
package jointoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"sync"
	"time"
)

// Size is the length of every token.
// Size is a token's length: an 8-byte expiry and an HMAC-SHA256.
const Size = 8 + sha256.Size

// Why Verify refused a token.
var (
	ErrNoKey     = errors.New("jointoken: no join key configured")
	ErrMalformed = errors.New("jointoken: malformed token")
	ErrForged    = errors.New("jointoken: token does not match (wrong key, session or path)")
	ErrExpired   = errors.New("jointoken: token expired")
	ErrReplayed  = errors.New("jointoken: token already used")
	ErrCacheFull = errors.New("jointoken: too many live tokens")
)

func mac(key []byte, sessionID, pathID string, expiry uint64) []byte {
	h := hmac.New(sha256.New, key)
	var n [8]byte
	h.Write([]byte("kwik-join-v1"))
	binary.BigEndian.PutUint64(n[:], uint64(len(sessionID)))
	h.Write(n[:])
	h.Write([]byte(sessionID))
	binary.BigEndian.PutUint64(n[:], uint64(len(pathID)))
	h.Write(n[:])
	h.Write([]byte(pathID))
	binary.BigEndian.PutUint64(n[:], expiry)
	h.Write(n[:])
	return h.Sum(nil)
}

// Issue returns a token for pathID of sessionID, valid until expiry.
func Issue(key []byte, sessionID, pathID string, expiry time.Time) ([]byte, error) {
	if len(key) == 0 {
		return nil, ErrNoKey
	}
	// Nanoseconds: two tokens for one path (a join, then a rejoin after it died) differ even
	// when issued within the same second, so the replay cache takes both.
	exp := uint64(expiry.UnixNano())
	tok := binary.BigEndian.AppendUint64(make([]byte, 0, Size), exp)
	return append(tok, mac(key, sessionID, pathID, exp)...), nil
}

// Verify checks a token for pathID of sessionID at time now, and returns its expiry.
func Verify(key, token []byte, sessionID, pathID string, now time.Time) (time.Time, error) {
	if len(key) == 0 {
		return time.Time{}, ErrNoKey
	}
	if len(token) != Size {
		return time.Time{}, ErrMalformed
	}
	exp := binary.BigEndian.Uint64(token[:8])
	if !hmac.Equal(token[8:], mac(key, sessionID, pathID, exp)) {
		return time.Time{}, ErrForged
	}
	if exp > 1<<63-1 {
		return time.Time{}, ErrMalformed
	}
	expiry := time.Unix(0, int64(exp))
	if !now.Before(expiry) {
		return time.Time{}, ErrExpired
	}
	return expiry, nil
}

// ReplayCache remembers the tokens used until they expire. It is safe for concurrent use.
type ReplayCache struct {
	max int

	mu   sync.Mutex
	seen map[[sha256.Size]byte]time.Time
}

// NewReplayCache returns a cache holding at most max live tokens; beyond that, Use refuses
// new tokens (rather than forget one that could then be replayed).
func NewReplayCache(max int) *ReplayCache {
	return &ReplayCache{max: max, seen: make(map[[sha256.Size]byte]time.Time)}
}

// Use records a verified token, or returns ErrReplayed if it was used before.
func (c *ReplayCache) Use(token []byte, expiry, now time.Time) error {
	if len(token) != Size {
		return ErrMalformed
	}
	var k [sha256.Size]byte
	copy(k[:], token[8:])
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[k]; ok {
		return ErrReplayed
	}
	if len(c.seen) >= c.max {
		for t, exp := range c.seen {
			if !now.Before(exp) {
				delete(c.seen, t)
			}
		}
		if len(c.seen) >= c.max {
			return ErrCacheFull
		}
	}
	c.seen[k] = expiry
	return nil
}
