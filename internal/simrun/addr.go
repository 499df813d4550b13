package simrun

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// ParseIPRange parses "", "A", "A,B,C" or "A-B" (a range of the last
// octet) into IPv4 addresses.
func ParseIPRange(s string) ([]net.IP, error) {
	if s == "" {
		return nil, nil
	}
	var out []net.IP
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a := net.ParseIP(lo).To4()
		if a == nil {
			return nil, fmt.Errorf("%q is not an IPv4 address", lo)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b := net.ParseIP(hi).To4()
		if b == nil || !bytes.Equal(a[:3], b[:3]) || b[3] < a[3] {
			return nil, fmt.Errorf("bad range %q (use A-B within one /24)", part)
		}
		for o := int(a[3]); o <= int(b[3]); o++ {
			out = append(out, net.IPv4(a[0], a[1], a[2], byte(o)).To4())
		}
	}
	return out, nil
}

// loopbackSources are the source addresses "auto" picks for nodes on this
// machine.
const loopbackSources = "127.0.0.2-127.0.0.254"

// isLoopbackURL reports whether u's host is a loopback address (or
// localhost).
func isLoopbackURL(u string) bool {
	p, err := url.Parse(u)
	if err != nil {
		return false
	}
	h := p.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
