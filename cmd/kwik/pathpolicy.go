package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Which secondaries kwik get joins, and how it trusts them. A primary chooses the addresses its
// client joins (AddPath): left alone, a hostile primary could have kwik get dial anything on
// the user's own networks. So a secondary's address must be public, or in the same kind of
// network as the primary's (loopback for a loopback primary, private for a private one), or
// pinned, or allowed with --allow-path. Each address is trusted by its own pin if it has one
// (a secondary's certificate does not pass for the primary's address, nor the reverse), else
// by --ca or the system's roots.

// pins are the fingerprints given with --pin: bare ones for the primary, ADDRESS=FP ones for
// that address.
type pins struct {
	primary []string
	byAddr  map[string][]string
}

func parsePins(list []string) pins {
	p := pins{byAddr: map[string][]string{}}
	for _, s := range list {
		addr, fp, ok := strings.Cut(s, "=")
		if !ok {
			p.primary = append(p.primary, s)
			continue
		}
		p.byAddr[addr] = append(p.byAddr[addr], fp)
	}
	return p
}

// forAddr returns the pins of addr: the primary's own include the bare ones.
func (p pins) forAddr(addr string, primary bool) []string {
	out := append([]string(nil), p.byAddr[addr]...)
	if primary {
		out = append(out, p.primary...)
	}
	return out
}

// pathTLS trusts each secondary's address by its own pins, or else by --ca or the system's roots.
func pathTLS(p pins, caFile, serverName string) func(string, *tls.Config) *tls.Config {
	return func(addr string, _ *tls.Config) *tls.Config {
		c, err := clientTLS(caFile, p.forAddr(addr, false), serverName)
		if err != nil {
			// The CA file was read at start: it no longer reads. Trust nothing.
			return &tls.Config{VerifyConnection: func(tls.ConnectionState) error { return err }, InsecureSkipVerify: true}
		}
		return c
	}
}

// netKind classifies an address: what a primary may not make its clients dial by default.
func netKind(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsPrivate() || netip.MustParsePrefix("100.64.0.0/10").Contains(ip):
		return "private"
	case ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast():
		return "unroutable"
	}
	return ""
}

// resolveTimeout bounds the name resolution of one secondary's address.
const resolveTimeout = 3 * time.Second

// allowPath returns kwik get's Config.AllowPath for a session with the primary at primary.
func allowPath(primary string, p pins, allowed []netip.Prefix) func(string) error {
	primaryKinds := map[string]bool{}
	for _, ip := range resolve(primary) {
		primaryKinds[netKind(ip)] = true
	}
	return func(addr string) error {
		if len(p.byAddr[addr]) > 0 {
			return nil
		}
		ips := resolve(addr)
		if len(ips) == 0 {
			return errors.New("does not resolve")
		}
		for _, ip := range ips {
			kind := netKind(ip)
			if kind == "" || (kind != "unroutable" && kind != "link-local" && primaryKinds[kind]) || inAny(allowed, ip) {
				continue
			}
			return fmt.Errorf("%s is a %s address (allow it with --allow-path, or pin it)", ip, kind)
		}
		return nil
	}
}

func inAny(ps []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(ip.Unmap()) {
			return true
		}
	}
	return false
}

// resolve returns the addresses of host:port, or nil.
func resolve(addr string) []netip.Addr {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	return ips
}

// parseAllowed reads --allow-path: prefixes (10.0.0.0/8) or single addresses.
func parseAllowed(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("--allow-path %q: not an address or prefix", s)
		}
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out, nil
}
