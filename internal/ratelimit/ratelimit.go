// Package ratelimit holds what the node's and the directory's limits share:
// a token bucket, and how a client's address is keyed (an IPv6 address by
// its /64, which one subscriber usually gets whole) and exempted.
package ratelimit

import (
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Bucket is a token bucket: it holds up to burst tokens and gains rate
// tokens a second; each event takes one. Its zero value is full. It is not
// safe for concurrent use: its owner serializes.
type Bucket struct {
	used float64 // tokens taken and not yet refilled, 0..burst
	last int64   // unix nanos of the last take
}

// Take takes a token at now (unix nanos), if there is one.
func (b *Bucket) Take(now int64, rate, burst float64) bool {
	if b.last != 0 {
		b.used = max(0, b.used-float64(now-b.last)*rate/float64(time.Second))
	}
	b.last = now
	if b.used+1 > burst {
		return false
	}
	b.used++
	return true
}

// Full reports whether the bucket has refilled by now.
func (b *Bucket) Full(now int64, rate float64) bool {
	return b.last == 0 || b.used-float64(now-b.last)*rate/float64(time.Second) <= 0
}

// Networks is a list of networks, such as the addresses exempt from limits.
type Networks []netip.Prefix

// ParseNetworks parses CIDR networks; key names the configuration key in
// errors.
func ParseNetworks(key string, cidrs []string) (Networks, error) {
	var out Networks
	for i, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %q is not a CIDR network: %w", key, i, s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Contains reports whether ip is in one of the networks.
func (ns Networks) Contains(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range ns {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Key returns what ip counts under: itself, or its /64 for IPv6.
func Key(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// AddrOf returns the IP address of a net.Addr or a "host:port" string.
func AddrOf(a string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(a); err == nil {
		return ap.Addr().Unmap(), true
	}
	host, _, err := net.SplitHostPort(a)
	if err != nil {
		host = a
	}
	ip, err := netip.ParseAddr(host)
	return ip.Unmap(), err == nil
}

// Shard returns a shard index in [0, n) for ip.
func Shard(ip netip.Addr, n int) int {
	b := ip.As16()
	return int(b[15]^b[14]^b[13]^b[7]^b[6]) % n
}
