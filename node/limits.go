package node

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tetherhq/tether/internal/ratelimit"
)

// Per-address limits: how many connections one source address may hold
// (in all, and not yet authenticated) and how fast it may open new ones.
// They keep one client from filling a node's descriptors and handshake
// slots; docs/security.md has the figures. An IPv6 address counts by its
// /64, which one subscriber usually gets whole.

// addrLimits tracks the connections of every source address. The zero
// value of a limit field means "no limit".
type addrLimits struct {
	maxConns, maxUnauth int32   // 0: no cap
	rate, burst         float64 // rate 0: no rate limit
	exempt              ratelimit.Networks
	shards              [16]addrShard
}

type addrShard struct {
	mu sync.Mutex
	m  map[netip.Addr]*addrState
}

// addrState is one address's count and connection-rate bucket.
type addrState struct {
	conns, unauth int32
	bucket        ratelimit.Bucket
}

// newAddrLimits builds the limits of cfg (defaults applied, validated).
func newAddrLimits(cfg Config) *addrLimits {
	l := &addrLimits{}
	if cfg.MaxConnsPerAddress > 0 {
		l.maxConns = int32(cfg.MaxConnsPerAddress)
	}
	if cfg.MaxUnauthenticatedPerAddress > 0 {
		l.maxUnauth = int32(cfg.MaxUnauthenticatedPerAddress)
	}
	if cfg.ConnRatePerAddress > 0 {
		l.rate, l.burst = cfg.ConnRatePerAddress, float64(cfg.ConnBurstPerAddress)
	}
	l.exempt, _ = ratelimit.ParseNetworks("node.address_limits_exempt", cfg.AddressLimitsExempt) // validated
	for i := range l.shards {
		l.shards[i].m = make(map[netip.Addr]*addrState)
	}
	return l
}

// key returns the address a connection from a counts under, and false when
// the limits do not apply to it (exempt, or not an IP address).
func (l *addrLimits) key(a net.Addr) (netip.Addr, bool) {
	if l.maxConns == 0 && l.maxUnauth == 0 && l.rate == 0 {
		return netip.Addr{}, false
	}
	ip, ok := ratelimit.AddrOf(a.String())
	if !ok || l.exempt.Contains(ip) {
		return netip.Addr{}, false
	}
	return ratelimit.Key(ip), true
}

func (l *addrLimits) shard(k netip.Addr) *addrShard {
	return &l.shards[ratelimit.Shard(k, len(l.shards))]
}

// admit counts a new connection from k, unauthenticated, and reports
// whether it is within the limits; a refused one is not counted.
func (l *addrLimits) admit(k netip.Addr, now int64) bool {
	s := l.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.m[k]
	if st == nil {
		st = &addrState{}
		s.m[k] = st
	}
	if (l.maxConns > 0 && st.conns >= l.maxConns) || (l.maxUnauth > 0 && st.unauth >= l.maxUnauth) {
		return false
	}
	if l.rate > 0 && !st.bucket.Take(now, l.rate, l.burst) {
		return false
	}
	st.conns++
	st.unauth++
	return true
}

// authenticated moves one connection of k from unauthenticated to
// authenticated.
func (l *addrLimits) authenticated(k netip.Addr) {
	s := l.shard(k)
	s.mu.Lock()
	if st := s.m[k]; st != nil && st.unauth > 0 {
		st.unauth--
	}
	s.mu.Unlock()
}

// release uncounts a closed connection of k (unauth: it never
// authenticated).
func (l *addrLimits) release(k netip.Addr, unauth bool) {
	s := l.shard(k)
	s.mu.Lock()
	if st := s.m[k]; st != nil {
		st.conns--
		if unauth && st.unauth > 0 {
			st.unauth--
		}
	}
	s.mu.Unlock()
}

// sweep forgets addresses without connections whose rate bucket is full
// again, so that the table holds only addresses seen lately.
func (l *addrLimits) sweep(now int64) {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for k, st := range s.m {
			if st.conns <= 0 && (l.rate == 0 || st.bucket.Full(now, l.rate)) {
				delete(s.m, k)
			}
		}
		s.mu.Unlock()
	}
}

// addresses returns the number of addresses tracked; for tests.
func (l *addrLimits) addresses() int {
	k := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		k += len(s.m)
		s.mu.Unlock()
	}
	return k
}

// warnSampler logs at most once per logEvery; the next line it logs says
// how many it held back. For what an attacker can make happen at will.
type warnSampler struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// logEvery is the most a sampled message is logged.
const logEvery = 10 * time.Second

func (s *warnSampler) warn(log *slog.Logger, msg string, args ...any) {
	s.mu.Lock()
	now := time.Now()
	if !s.last.IsZero() && now.Sub(s.last) < logEvery {
		s.suppressed++
		s.mu.Unlock()
		return
	}
	n := s.suppressed
	s.last, s.suppressed = now, 0
	s.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Warn(msg, args...)
}
