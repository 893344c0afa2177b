package kwik

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/kwik-go/kwik/internal/jointoken"
	"github.com/kwik-go/kwik/internal/wire/pb"
)

// Trust boundaries (docs/PROTOCOL.md, section 15). The client is anyone; a secondary trusts
// its primary, never the client, although everything the primary orders travels through the
// client. So:
//   - a listener's role is explicit (ListenerRole): a secondary-only listener opens no session
//     for anyone who dials it, a primary-only one takes no joins;
//   - a join token binds the session, the path, the secondary's address, its issue time and
//     expiry; a secondary takes, per session and path, only tokens issued after the last one
//     it took and after it started (joinGuard);
//   - every delegation carries the primary's MAC (delegationMAC), which the secondary checks
//     before it surfaces the range, and its IDs only grow per session and path, so that the
//     client can neither forge nor replay one;
//   - a secondary holds at most maxSecondaryDelegations delegations (waiting for AcceptStream
//     or accepted and not closed) and maxSecondaryRequestBytes of their requests per session;
//     the primary never delegates past either, so going over is a protocol violation.

// ListenerRole says which sessions a Listener accepts (Config.ListenerRole).
type ListenerRole int

// The roles of a listener.
const (
	// ListenAny accepts new sessions (this server is their primary) and joins (a secondary).
	ListenAny ListenerRole = iota
	// ListenPrimary accepts new sessions only: joins are refused with KWIK_AUTH_FAILED.
	ListenPrimary
	// ListenSecondary accepts joins only: a client opening a session is refused with
	// KWIK_AUTH_FAILED. It needs Config.JoinKey.
	ListenSecondary
)

// String returns any, primary or secondary.
func (r ListenerRole) String() string {
	switch r {
	case ListenAny:
		return "any"
	case ListenPrimary:
		return "primary"
	case ListenSecondary:
		return "secondary"
	}
	return fmt.Sprintf("ListenerRole(%d)", int(r))
}

const (
	// maxSecondaryDelegations bounds the delegations a secondary session holds at once:
	// waiting for AcceptStream, or accepted and not yet closed. A primary delegates no more to
	// one path before the client reported on earlier ones.
	maxSecondaryDelegations = 1024
	// maxSecondaryRequestBytes bounds the bytes of those delegations' requests.
	maxSecondaryRequestBytes = 4 << 20
	// delegationTTL is how long a delegation's MAC stays valid: it has to cross the client,
	// which forwards it at once, and cover the clocks' difference between the two servers.
	delegationTTL = time.Minute
	// joinGuardMaxPerSession bounds the paths of one session a listener keeps join state for.
	joinGuardMaxPerSession = 64
	// joinGuardMax bounds the join state a listener keeps in all; past it (a flood of joins
	// within one token lifetime) joins are refused rather than risk accepting a replay.
	joinGuardMax = 1 << 16
)

// ---- delegation MACs ----

// delegationKey derives the key of delegation MACs from the join key.
func delegationKey(joinKey []byte) []byte {
	if len(joinKey) == 0 {
		return nil
	}
	h := hmac.New(sha256.New, joinKey)
	h.Write([]byte("kwik-delegation-key-v1"))
	return h.Sum(nil)
}

// delegationMAC is the primary's MAC over one delegation: HMAC-SHA256(key,
// "kwik-delegation-v1" | len+session ID | len+path ID | delegation ID | stream | offset |
// length | SHA-256(request) | expiry), integers as big-endian u64.
func delegationMAC(key []byte, sessionID, pathID string, id, stream, off, length uint64, request []byte, expiry uint64) []byte {
	h := hmac.New(sha256.New, key)
	var n [8]byte
	h.Write([]byte("kwik-delegation-v1"))
	for _, s := range []string{sessionID, pathID} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	for _, v := range []uint64{id, stream, off, length} {
		binary.BigEndian.PutUint64(n[:], v)
		h.Write(n[:])
	}
	rh := sha256.Sum256(request)
	h.Write(rh[:])
	binary.BigEndian.PutUint64(n[:], expiry)
	h.Write(n[:])
	return h.Sum(nil)
}

// signDelegation fills in the expiry and MAC of a DelegateRange (primary).
func (s *session) signDelegation(m *pb.DelegateRange) {
	if s.delegKey == nil {
		return
	}
	m.Expiry = uint64(time.Now().Add(delegationTTL).UnixNano())
	m.Auth = delegationMAC(s.delegKey, s.id, m.PathId, m.DelegationId, m.LogicalStreamId, m.Offset, m.Length, m.Request, m.Expiry)
}

// errDelegationForged is how a secondary ends a path whose client handed it an assignment the
// primary did not sign.
var errDelegationForged = &Error{Code: CodeAuthFailed, Message: "delegation not authenticated by the primary"}

// verifyAssign checks an assignment on the secondary p: the primary's MAC for this session and
// path, and a delegation ID never taken before on this session and path (here or in an earlier
// join of the same path), which may come in any order within delegationWindow below the
// highest taken. It returns expired=true for a genuine assignment that arrived too late, or
// below the window, which is refused without ending the path.
func (s *session) verifyAssign(p *path, m *pb.DelegationAssign) (expired bool, err error) {
	if s.delegKey == nil {
		return false, errDelegationForged
	}
	want := delegationMAC(s.delegKey, s.id, p.id, m.DelegationId, m.LogicalStreamId, m.Offset, m.Length, m.Request, m.Expiry)
	if !hmac.Equal(m.Auth, want) {
		return false, errDelegationForged
	}
	if s.joinState != nil {
		switch s.joinState.takeDelegation(m.DelegationId, m.Expiry) {
		case delegationReplayed:
			return false, &Error{Code: CodeInvalidFrame, Message: "delegation replayed"}
		case delegationTooOld:
			return true, nil // refused as an expired one: the primary sends the range itself
		}
	}
	if m.Expiry > 1<<63-1 || !time.Now().Before(time.Unix(0, int64(m.Expiry))) {
		return true, nil
	}
	return false, nil
}

// ---- join state ----

// joinGuard is a listener's memory of the joins it accepted: per session and path, the issue
// time of the last token taken and the last delegation ID taken, so that neither replays into
// a later join of the same path. Entries live while a session uses them or a token or
// delegation they took is unexpired. It also refuses tokens issued before the listener
// started: the state of an earlier process is gone, and its tokens with it.
type joinGuard struct {
	start time.Time
	self  string // the listener's own address, always one of its JoinAddresses

	mu        sync.Mutex
	entries   map[joinKey]*joinEntry
	bySession map[string]int
}

type joinKey struct{ session, path string }

// joinEntry is the state of one session's path. Fields guarded by joinGuard.mu.
type joinEntry struct {
	g        *joinGuard
	key      joinKey
	issued   int64 // Unix ns of the last token taken
	expiry   int64 // Unix ns: the latest expiry of what it took
	sessions int   // live sessions using it
	// The delegation IDs taken: the highest, and the delegationWindow IDs below it (bit i of
	// delegSeen: delegHigh-i was taken).
	delegHigh uint64
	delegSeen [delegationWindow / 64]uint64
	delegAny  bool
}

// delegationWindow is how far below the highest delegation ID taken a secondary still takes
// one it has not seen. A primary sends each delegation on a stream of its own (PROTOCOL.md
// §14), so they reach the client, and the secondary, in any order: as IPsec and DTLS do for
// their packets, the secondary takes every ID once, in any order within the window, and
// refuses one older than that.
const delegationWindow = 4096

// delegationTake is what takeDelegation found of an ID.
type delegationTake int

const (
	delegationTaken    delegationTake = iota // new: taken
	delegationReplayed                       // taken before
	delegationTooOld                         // below the window: it cannot tell
)

func newJoinGuard() *joinGuard {
	return &joinGuard{start: time.Now(), entries: make(map[joinKey]*joinEntry), bySession: make(map[string]int)}
}

var (
	errTokenReplayed   = errors.New("join token already used, or older than one used for this path")
	errTokenBeforeBoot = errors.New("join token issued before this server started")
	errJoinStateFull   = errors.New("too many joins in progress")
)

// use records a verified token for a join of path of session, or refuses it. The entry it
// returns is the new session's, which must release it when it ends.
func (g *joinGuard) use(session, path string, tok jointoken.Token, now time.Time) (*joinEntry, error) {
	if tok.Issued.Before(g.start) {
		return nil, errTokenBeforeBoot
	}
	iss, exp := tok.Issued.UnixNano(), tok.Expiry.UnixNano()
	k := joinKey{session, path}
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.entries[k]
	if e != nil {
		if iss <= e.issued {
			return nil, errTokenReplayed
		}
	} else {
		if len(g.entries) >= joinGuardMax || g.bySession[session] >= joinGuardMaxPerSession {
			g.sweepLocked(now)
		}
		if len(g.entries) >= joinGuardMax || g.bySession[session] >= joinGuardMaxPerSession {
			return nil, errJoinStateFull
		}
		e = &joinEntry{g: g, key: k}
		g.entries[k] = e
		g.bySession[session]++
	}
	e.issued = iss
	e.expiry = max(e.expiry, exp)
	e.sessions++
	return e, nil
}

// sweepLocked forgets entries that no session uses and whose tokens and delegations expired.
func (g *joinGuard) sweepLocked(now time.Time) {
	n := now.UnixNano()
	for k, e := range g.entries {
		if e.sessions == 0 && e.expiry <= n {
			g.removeLocked(k)
		}
	}
}

func (g *joinGuard) removeLocked(k joinKey) {
	delete(g.entries, k)
	if g.bySession[k.session]--; g.bySession[k.session] <= 0 {
		delete(g.bySession, k.session)
	}
}

// release is called once by the session that took the entry, when it ends.
func (e *joinEntry) release() {
	e.g.mu.Lock()
	e.sessions--
	e.g.mu.Unlock()
}

// takeDelegation records a delegation ID once, in any order within delegationWindow below the
// highest taken.
func (e *joinEntry) takeDelegation(id, expiry uint64) delegationTake {
	e.g.mu.Lock()
	defer e.g.mu.Unlock()
	switch {
	case !e.delegAny || id > e.delegHigh:
		shift := uint64(delegationWindow)
		if e.delegAny {
			shift = min(id-e.delegHigh, delegationWindow)
		}
		e.shiftSeen(shift)
		e.delegHigh, e.delegAny = id, true
		e.delegSeen[0] |= 1
	case e.delegHigh-id >= delegationWindow:
		return delegationTooOld
	default:
		i := e.delegHigh - id
		if e.delegSeen[i/64]&(1<<(i%64)) != 0 {
			return delegationReplayed
		}
		e.delegSeen[i/64] |= 1 << (i % 64)
	}
	if expiry <= 1<<63-1 {
		e.expiry = max(e.expiry, int64(expiry))
	}
	return delegationTaken
}

// shiftSeen moves the window up by n IDs: bit i becomes bit i+n, those past the window go.
func (e *joinEntry) shiftSeen(n uint64) {
	if n >= delegationWindow {
		clear(e.delegSeen[:])
		return
	}
	words, bits := int(n/64), n%64
	for i := len(e.delegSeen) - 1; i >= 0; i-- {
		var v uint64
		if j := i - words; j >= 0 {
			v = e.delegSeen[j] << bits
			if bits > 0 && j > 0 {
				v |= e.delegSeen[j-1] >> (64 - bits)
			}
		}
		e.delegSeen[i] = v
	}
}

// ---- listener roles ----

// checkRole refuses what a listener's role excludes: a new session at a secondary-only
// listener, a join at a primary-only one.
func checkRole(role ListenerRole, join bool) error {
	switch {
	case role == ListenSecondary && !join:
		return errors.New("this server is a secondary: it opens no sessions")
	case role == ListenPrimary && join:
		return errors.New("this server is a primary: it takes no joins")
	}
	return nil
}

// targetAllowed says whether a secondary with these join addresses (and its own, self) takes
// a token bound to target: any when it names none.
func targetAllowed(addrs []string, self, target string) bool {
	return len(addrs) == 0 || target == self || slices.Contains(addrs, target)
}

// ---- primary: tokens and delegations per path ----

const (
	// tokensPerDeath bounds the rejoin tokens a primary gives for one death of a path.
	tokensPerDeath = 8
	// tokensPerPath bounds the rejoin tokens a primary gives for one path in all.
	tokensPerPath = 32
	// tokenBackoff is the wait before a path's second token after a death; it doubles with
	// every token of that death, up to tokenBackoffMax. An honest client waits longer
	// (RetryPolicy: 500 ms at least, minus jitter, doubling).
	tokenBackoff    = 100 * time.Millisecond
	tokenBackoffMax = 5 * time.Second
)

// tokenLimit is a primary's count of the rejoin tokens of one path. Owned by the session's loop
// (session_loop.go), as the path's record.
type tokenLimit struct {
	sinceDeath, total int
	next              time.Time // no token before
}

// allow says whether another token may be issued now, and records it if so.
func (l *tokenLimit) allow(now time.Time) error {
	switch {
	case l.total >= tokensPerPath:
		return fmt.Errorf("the path was given %d tokens already", l.total)
	case l.sinceDeath >= tokensPerDeath:
		return fmt.Errorf("the path was given %d tokens since it died", l.sinceDeath)
	case now.Before(l.next):
		return errors.New("too soon after the last token")
	}
	wait := tokenBackoff << min(l.sinceDeath, 10)
	l.sinceDeath++
	l.total++
	l.next = now.Add(min(wait, tokenBackoffMax))
	return nil
}

// died starts a new death: its tokens count from 0, the first without waiting.
func (l *tokenLimit) died() { l.sinceDeath, l.next = 0, time.Time{} }

// outstanding counts a path's unresolved delegations on the primary.
type outstanding struct{ n, reqBytes int }

// reserve counts a new delegation to pathID, or refuses it if the secondary could not hold it.
func (d *primaryDelegations) reserve(pathID string, reqLen int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	o := d.outstanding[pathID]
	if o.n >= maxSecondaryDelegations || o.reqBytes+reqLen > maxSecondaryRequestBytes {
		return fmt.Errorf("kwik: Delegate: %d delegations to path %s unresolved, as many as a secondary holds", o.n, pathID)
	}
	o.n++
	o.reqBytes += reqLen
	d.outstanding[pathID] = o
	return nil
}

// release uncounts a resolved delegation.
func (d *primaryDelegations) release(pathID string, reqLen int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	o := d.outstanding[pathID]
	o.n--
	o.reqBytes -= reqLen
	if o.n <= 0 {
		delete(d.outstanding, pathID)
	} else {
		d.outstanding[pathID] = o
	}
}
