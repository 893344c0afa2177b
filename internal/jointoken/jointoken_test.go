package jointoken

import (
	"errors"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	key := []byte("shared key")
	now := time.Unix(1_800_000_000, 0)
	tok, err := Issue(key, "sess", "path", now.Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	forged := append([]byte(nil), tok...)
	forged[len(forged)-1] ^= 1
	longer := append([]byte(nil), tok...)
	longer[7]++ // a later expiry: the MAC no longer matches
	for _, tc := range []struct {
		name          string
		key, token    []byte
		session, path string
		at            time.Time
		want          error
	}{
		{"valid", key, tok, "sess", "path", now, nil},
		{"no key", nil, tok, "sess", "path", now, ErrNoKey},
		{"other key", []byte("other"), tok, "sess", "path", now, ErrForged},
		{"other session", key, tok, "sess2", "path", now, ErrForged},
		{"other path", key, tok, "sess", "path2", now, ErrForged},
		{"forged mac", key, forged, "sess", "path", now, ErrForged},
		{"extended expiry", key, longer, "sess", "path", now, ErrForged},
		{"expired", key, tok, "sess", "path", now.Add(10 * time.Second), ErrExpired},
		{"short", key, tok[:10], "sess", "path", now, ErrMalformed},
		{"empty", key, nil, "sess", "path", now, ErrMalformed},
		{"session ID as token", key, []byte("sess"), "sess", "path", now, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(tc.key, tc.token, tc.session, tc.path, tc.at)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
	// Moving bytes between session and path IDs must not keep the MAC valid.
	tok2, _ := Issue(key, "ab", "c", now.Add(time.Minute))
	if _, err := Verify(key, tok2, "a", "bc", now); !errors.Is(err, ErrForged) {
		t.Fatalf("ambiguous concatenation accepted: %v", err)
	}
}

func TestReplayCache(t *testing.T) {
	key := []byte("k")
	now := time.Unix(1_800_000_000, 0)
	c := NewReplayCache(2)
	t1, _ := Issue(key, "s", "p1", now.Add(time.Second))
	t2, _ := Issue(key, "s", "p2", now.Add(time.Hour))
	t3, _ := Issue(key, "s", "p3", now.Add(time.Hour))
	if err := c.Use(t1, now.Add(time.Second), now); err != nil {
		t.Fatal(err)
	}
	if err := c.Use(t1, now.Add(time.Second), now); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay: %v", err)
	}
	if err := c.Use(t2, now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	if err := c.Use(t3, now.Add(time.Hour), now); !errors.Is(err, ErrCacheFull) {
		t.Fatalf("full cache: %v", err)
	}
	// Once t1 has expired its slot is free again.
	if err := c.Use(t3, now.Add(time.Hour), now.Add(2*time.Second)); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	key := []byte("fuzz key")
	now := time.Unix(1_800_000_000, 0)
	tok, _ := Issue(key, "s", "p", now.Add(time.Minute))
	f.Add(tok, "s", "p")
	f.Add([]byte{}, "", "")
	f.Fuzz(func(t *testing.T, token []byte, session, path string) {
		exp, err := Verify(key, token, session, path, now)
		if err != nil {
			return
		}
		// Whatever verifies must be what Issue gives for those IDs and that expiry.
		want, _ := Issue(key, session, path, exp)
		if string(want) != string(token) {
			t.Fatalf("accepted a token Issue would not make")
		}
	})
}
