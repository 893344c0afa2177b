package jointoken

import (
	"errors"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	key := []byte("shared key")
	now := time.Unix(1_800_000_000, 0)
	tok, err := Issue(key, "sess", "path", "a:1", now, now.Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	forged := append([]byte(nil), tok...)
	forged[len(forged)-1] ^= 1
	longer := append([]byte(nil), tok...)
	longer[15]++ // a later expiry: the MAC no longer matches
	later := append([]byte(nil), tok...)
	later[7]++ // a later issue time (to pass a replay check): the MAC no longer matches
	for _, tc := range []struct {
		name                  string
		key, token            []byte
		session, path, target string
		at                    time.Time
		want                  error
	}{
		{"valid", key, tok, "sess", "path", "a:1", now, nil},
		{"no key", nil, tok, "sess", "path", "a:1", now, ErrNoKey},
		{"other key", []byte("other"), tok, "sess", "path", "a:1", now, ErrForged},
		{"other session", key, tok, "sess2", "path", "a:1", now, ErrForged},
		{"other path", key, tok, "sess", "path2", "a:1", now, ErrForged},
		{"other secondary", key, tok, "sess", "path", "b:1", now, ErrForged},
		{"forged mac", key, forged, "sess", "path", "a:1", now, ErrForged},
		{"extended expiry", key, longer, "sess", "path", "a:1", now, ErrForged},
		{"later issue time", key, later, "sess", "path", "a:1", now, ErrForged},
		{"expired", key, tok, "sess", "path", "a:1", now.Add(10 * time.Second), ErrExpired},
		{"short", key, tok[:10], "sess", "path", "a:1", now, ErrMalformed},
		{"empty", key, nil, "sess", "path", "a:1", now, ErrMalformed},
		{"session ID as token", key, []byte("sess"), "sess", "path", "a:1", now, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(tc.key, tc.token, tc.session, tc.path, tc.target, tc.at)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
	// Moving bytes between session, path and target must not keep the MAC valid.
	tok2, _ := Issue(key, "ab", "c", "d", now, now.Add(time.Minute))
	for _, ids := range [][3]string{{"a", "bc", "d"}, {"ab", "", "cd"}, {"abc", "", "d"}} {
		if _, err := Verify(key, tok2, ids[0], ids[1], ids[2], now); !errors.Is(err, ErrForged) {
			t.Fatalf("ambiguous concatenation %q accepted: %v", ids, err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	key := []byte("fuzz key")
	now := time.Unix(1_800_000_000, 0)
	tok, _ := Issue(key, "s", "p", "t", now, now.Add(time.Minute))
	f.Add(tok, "s", "p", "t")
	f.Add([]byte{}, "", "", "")
	f.Fuzz(func(t *testing.T, token []byte, session, path, target string) {
		c, err := Verify(key, token, session, path, target, now)
		if err != nil {
			return
		}
		// Whatever verifies must be what Issue gives for those claims.
		want, _ := Issue(key, session, path, target, c.Issued, c.Expiry)
		if string(want) != string(token) {
			t.Fatalf("accepted a token Issue would not make")
		}
	})
}
