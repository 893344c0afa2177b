package kwik

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwik-go/kwik/internal/netsim"
)

// retryConf is clientConf with a quick retry policy.
func retryConf(p RetryPolicy) *Config {
	c := clientConf()
	c.PathRetry = p
	return c
}

// waitWithin polls cond until it holds or d passes: d guards against a hang, it measures
// nothing.
func waitWithin(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A blackholed secondary is declared dead; once its link comes back, the client rejoins it
// under the same path ID with a fresh token, the primary lists it active again, and a new
// delegation to it arrives byte-exact, served by the secondary's new session.
func TestPathRecovery(t *testing.T) {
	pol := RetryPolicy{MaxRetries: 50, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, TryTimeout: 500 * time.Millisecond}
	p := newPair(t, retryConf(pol), serverConf())
	// The secondary's side of a dead path ends at QUIC's idle timeout, as a quic-go
	// connection's would: short here, so that the outage stays within the rejoin tokens the
	// primary gives for one death of the path.
	sconf := serverConf()
	sconf.QUIC = &quic.Config{MaxIdleTimeout: 2 * time.Second}
	ln := listen(t, sconf)
	r := relay(t, ln, netsim.Config{})
	id, sec := addPath(t, p.server, ln, r.Addr().String())
	ctx := testContext(t)

	r.SetBlackhole(true)
	waitFor(t, func() bool { _, ok := pathByID(p.server.GetDeadPaths(), id); return ok })
	if _, err := p.server.OpenStreamSync(ctx); err != nil {
		t.Fatal(err)
	}
	<-sec.Context().Done() // the secondary's side of the dead path ends on its own
	r.SetBlackhole(false)
	revived := time.Now()

	// The rejoin arrives at the secondary as a new session of the same client session.
	sec2, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sec2.Close()
	if sec2.ID() != p.client.ID() || sec2.Role() != RoleSecondary {
		t.Fatalf("rejoined as session %s (%v), want %s", sec2.ID(), sec2.Role(), p.client.ID())
	}
	// Worst case: a try that started just before the revival times out, then the longest wait.
	bound := pol.TryTimeout + time.Duration(float64(pol.MaxBackoff)*1.2) + pol.TryTimeout
	waitWithin(t, bound+5*time.Second, "the primary lists the path active", func() bool {
		pi, ok := pathByID(p.server.GetActivePaths(), id)
		return ok && pi.Address == r.Addr().String()
	})
	t.Logf("path active again %v after its link came back (policy bound %v)", time.Since(revived), bound)
	if _, ok := pathByID(p.client.GetActivePaths(), id); !ok {
		t.Fatal("the client does not list the rejoined path as active")
	}
	before := pathStats(p.client, id).BytesReceived

	// A new delegation to the rejoined path.
	go ServeFanout(ctx, sec2, bytes.NewReader(content(0, 1<<20)))
	st, err := p.server.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d, err := st.Delegate(id, 1<<20, FanoutRequest(0, 1<<20))
	if err != nil {
		t.Fatalf("Delegate to the rejoined path: %v", err)
	}
	st.Close()
	cst, err := p.client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The stream opened while the path was dead comes first; this one carries the range.
	for cst.StreamID() != st.StreamID() {
		if cst, err = p.client.AcceptStream(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got, err := io.ReadAll(cst)
	if err != nil || !bytes.Equal(got, content(0, 1<<20)) {
		t.Fatalf("delegated range: %d bytes, %v", len(got), err)
	}
	if err := d.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if after := pathStats(p.client, id).BytesReceived; after < before+1<<20 {
		t.Fatalf("the path's counters went from %d to %d bytes for 1 MiB", before, after)
	}
}

func pathStats(s Session, id string) PathStats {
	for _, ps := range s.Stats().Paths {
		if ps.PathID == id {
			return ps
		}
	}
	return PathStats{}
}

// With its link down for good, the path is tried MaxRetries times and stays dead on both
// sides; the history says why.
func TestPathRecoveryExhausted(t *testing.T) {
	pol := RetryPolicy{MaxRetries: 2, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, TryTimeout: 200 * time.Millisecond}
	p := newPair(t, retryConf(pol), serverConf())
	// The secondary's side of a dead path ends at QUIC's idle timeout, as a quic-go
	// connection's would: short here, so that the outage stays within the rejoin tokens the
	// primary gives for one death of the path.
	sconf := serverConf()
	sconf.QUIC = &quic.Config{MaxIdleTimeout: 2 * time.Second}
	ln := listen(t, sconf)
	r := relay(t, ln, netsim.Config{})
	id, _ := addPath(t, p.server, ln, r.Addr().String())
	r.SetBlackhole(true)
	waitFor(t, func() bool {
		pi, ok := pathByID(p.client.GetDeadPaths(), id)
		return ok && strings.Contains(pi.Reason, "not rejoined")
	})
	pi, _ := pathByID(p.client.GetAllPaths(), id)
	t.Logf("client's history: %s", pi.Reason)
	if pi, ok := pathByID(p.server.GetDeadPaths(), id); !ok {
		t.Fatalf("the primary lists the path as %v", pi.Status)
	}
	noSession(t, ln)
	if err := p.server.SendRawData([]byte("x"), id); !errors.Is(err, ErrPathDead) {
		t.Fatalf("SendRawData to the dead path: %v", err)
	}
}

// A path the primary removed is never rejoined: the primary refuses a token for it, and for
// any path that is not dead.
func TestPathRecoveryRefused(t *testing.T) {
	p := newPair(t, retryConf(RetryPolicy{MaxRetries: -1}), serverConf())
	ln := listen(t, serverConf())
	r := relay(t, ln, netsim.Config{})
	id, _ := addPath(t, p.server, ln, r.Addr().String())
	ctx := testContext(t)
	token := func(pathID string) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := p.client.requestToken(ctx, pathID)
		return err
	}
	if err := token(id); !errors.Is(err, ErrPathNotFound) {
		t.Fatalf("token for an active path: %v", err)
	}
	if err := token(p.client.primary.id); !errors.Is(err, ErrPathNotFound) {
		t.Fatalf("token for the primary path: %v", err)
	}
	r.SetBlackhole(true)
	waitFor(t, func() bool { _, ok := pathByID(p.server.GetDeadPaths(), id); return ok })
	if err := token(id); err != nil {
		t.Fatalf("token for a dead path: %v", err)
	}
	if err := p.server.RemovePath(id); err != nil {
		t.Fatal(err)
	}
	if err := token(id); !errors.Is(err, ErrPathNotFound) {
		t.Fatalf("token for a removed path: %v", err)
	}
	if pi, _ := pathByID(p.client.GetAllPaths(), id); pi.Status != PathRemoved {
		t.Fatalf("the client lists the removed path as %v", pi.Status)
	}
}

func TestRetryPolicyBackoff(t *testing.T) {
	c, err := (&Config{}).populate()
	if err != nil {
		t.Fatal(err)
	}
	pol := c.PathRetry
	if pol.MaxRetries != 4 || pol.InitialBackoff != 500*time.Millisecond || pol.MaxBackoff != 8*time.Second ||
		pol.Jitter != 0.2 || pol.TryTimeout != c.HandshakeTimeout {
		t.Fatalf("defaults: %+v", pol)
	}
	for try, want := range map[int]time.Duration{1: 500 * time.Millisecond, 2: time.Second, 4: 4 * time.Second, 5: 8 * time.Second, 60: 8 * time.Second} {
		if got := pol.backoff(try, func() float64 { return 0.5 }); got != want {
			t.Errorf("try %d: %v, want %v", try, got, want)
		}
		lo, hi := pol.backoff(try, func() float64 { return 0 }), pol.backoff(try, func() float64 { return 1 })
		if lo != time.Duration(float64(want)*0.8) || hi != time.Duration(float64(want)*1.2) {
			t.Errorf("try %d: jitter gives [%v, %v] around %v", try, lo, hi, want)
		}
	}
	if _, err := (&Config{PathRetry: RetryPolicy{Jitter: 1}}).populate(); err == nil {
		t.Error("Jitter 1 accepted")
	}
	if _, err := (&Config{PathRetry: RetryPolicy{InitialBackoff: -1}}).populate(); err == nil {
		t.Error("a negative backoff accepted")
	}
}
