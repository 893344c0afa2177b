package main

import (
	"strings"
	"testing"
)

// kwik get's AllowPath (issue 13, finding 6): a primary cannot make kwik get dial into the
// user's own networks, unless they are the primary's own kind, pinned or allowed.
func TestGetRefusesPrivateSecondaries(t *testing.T) {
	allowed, err := parseAllowed([]string{"10.1.0.0/16", "192.168.7.7"})
	if err != nil {
		t.Fatal(err)
	}
	pinned := parsePins([]string{"aa", "10.9.9.9:4433=bb"})
	for _, tc := range []struct {
		primary, secondary string
		ok                 bool
	}{
		{"203.0.113.5:4433", "198.51.100.7:4433", true},   // public, from a public primary
		{"203.0.113.5:4433", "127.0.0.1:22", false},       // loopback
		{"203.0.113.5:4433", "[::1]:22", false},           // loopback, IPv6
		{"203.0.113.5:4433", "169.254.169.254:80", false}, // link-local (cloud metadata)
		{"203.0.113.5:4433", "10.0.0.1:4433", false},      // private
		{"203.0.113.5:4433", "[fd00::1]:4433", false},     // private, IPv6
		{"203.0.113.5:4433", "100.64.0.1:4433", false},    // carrier-grade NAT
		{"203.0.113.5:4433", "0.0.0.0:4433", false},       // unspecified
		{"203.0.113.5:4433", "10.1.2.3:4433", true},       // --allow-path prefix
		{"203.0.113.5:4433", "192.168.7.7:4433", true},    // --allow-path address
		{"203.0.113.5:4433", "10.9.9.9:4433", true},       // pinned
		{"127.0.0.1:4433", "127.0.0.1:4434", true},        // a loopback primary's loopback secondary
		{"10.0.0.5:4433", "10.0.0.6:4433", true},          // a private primary's private secondary
		{"10.0.0.5:4433", "127.0.0.1:4433", false},        // but not loopback
		{"127.0.0.1:4433", "169.254.1.1:4433", false},     // link-local never by kind
		{"203.0.113.5:4433", "no-port", false},
	} {
		err := allowPath(tc.primary, pinned, allowed)(tc.secondary)
		if (err == nil) != tc.ok {
			t.Errorf("primary %s, secondary %s: %v, want allowed=%v", tc.primary, tc.secondary, err, tc.ok)
		}
		if err != nil && tc.secondary != "no-port" && !strings.Contains(err.Error(), "--allow-path") {
			t.Errorf("%s: the refusal does not say how to allow it: %v", tc.secondary, err)
		}
	}
	if p := parsePins([]string{"aa", "h:1=bb"}); len(p.forAddr("h:1", false)) != 1 || len(p.forAddr("x:1", true)) != 1 || len(p.forAddr("h:1", true)) != 2 {
		t.Errorf("pins %+v", p)
	}
	if _, err := parseAllowed([]string{"not an address"}); err == nil {
		t.Error("bad --allow-path accepted")
	}
}
