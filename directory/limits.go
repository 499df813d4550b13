package directory

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/internal/ratelimit"
)

// limits guard the directory's credentials: an address that fails to
// authenticate AuthFailures times (wrong admin token, wrong registration
// secret, invalid device token) is locked out of the admin API and
// negotiate for Lockout, and negotiate is rate-limited per address, so
// that guessing secrets or minting tokens in bulk is slow. Addresses are
// keyed as in ratelimit (IPv6 by /64), behind TrustedProxies by their
// X-Forwarded-For.
type limits struct {
	trusted, exempt     ratelimit.Networks
	failRate, failBurst float64
	lockout             time.Duration
	negRate, negBurst   float64

	shards [16]limitShard

	failures, lockouts, limited atomic.Uint64
}

type limitShard struct {
	mu sync.Mutex
	m  map[netip.Addr]*clientLimits
}

// clientLimits is one address's state.
type clientLimits struct {
	fails       ratelimit.Bucket
	lockedUntil int64 // unix nanos
	neg         ratelimit.Bucket
}

func newLimits(cfg Config) *limits {
	l := &limits{
		failBurst: float64(cfg.AuthFailures),
		failRate:  float64(cfg.AuthFailures) / cfg.Lockout.Seconds(),
		lockout:   cfg.Lockout,
		negBurst:  float64(cfg.NegotiateBurst),
	}
	if cfg.NegotiateRate > 0 {
		l.negRate = cfg.NegotiateRate
	}
	// Validated by Config.Validate.
	l.trusted, _ = ratelimit.ParseNetworks("directory.trusted_proxies", cfg.TrustedProxies)
	l.exempt, _ = ratelimit.ParseNetworks("directory.rate_limits_exempt", cfg.RateLimitsExempt)
	for i := range l.shards {
		l.shards[i].m = map[netip.Addr]*clientLimits{}
	}
	return l
}

// clientAddr returns the address of r's client: the peer, or behind a
// trusted proxy the last X-Forwarded-For entry that is not a trusted proxy.
func (l *limits) clientAddr(r *http.Request) (netip.Addr, bool) {
	peer, ok := ratelimit.AddrOf(r.RemoteAddr)
	if !ok || len(l.trusted) == 0 || !l.trusted.Contains(peer) {
		return peer, ok
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		for _, e := range strings.Split(h, ",") {
			hops = append(hops, strings.TrimSpace(e))
		}
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		ip, ok := ratelimit.AddrOf(hops[i])
		if !ok {
			break // garbage: stop at the last hop we can trust
		}
		client = ip
		if !l.trusted.Contains(ip) {
			break
		}
	}
	return client, true
}

func (l *limits) state(k netip.Addr) (*limitShard, *clientLimits) {
	s := &l.shards[ratelimit.Shard(k, len(l.shards))]
	s.mu.Lock()
	c := s.m[k]
	if c == nil {
		c = &clientLimits{}
		s.m[k] = c
	}
	return s, c
}

// lockedOut reports how long ip is still locked out (0: it is not).
func (l *limits) lockedOut(ip netip.Addr, now time.Time) time.Duration {
	s, c := l.state(ratelimit.Key(ip))
	defer s.mu.Unlock()
	if left := c.lockedUntil - now.UnixNano(); left > 0 {
		return time.Duration(left)
	}
	return 0
}

// failed counts a failed authentication of ip; the one that finds no
// failure left locks ip out.
func (l *limits) failed(ip netip.Addr, now time.Time) {
	l.failures.Add(1)
	s, c := l.state(ratelimit.Key(ip))
	defer s.mu.Unlock()
	if !c.fails.Take(now.UnixNano(), l.failRate, l.failBurst) {
		c.lockedUntil = now.Add(l.lockout).UnixNano()
		c.fails = ratelimit.Bucket{} // a fresh allowance once the lockout ends
		l.lockouts.Add(1)
	}
}

// negotiate takes one of ip's negotiate tokens; false: over the rate.
func (l *limits) negotiate(ip netip.Addr, now time.Time) bool {
	if l.negRate == 0 || l.exempt.Contains(ip) {
		return true
	}
	s, c := l.state(ratelimit.Key(ip))
	defer s.mu.Unlock()
	return c.neg.Take(now.UnixNano(), l.negRate, l.negBurst)
}

// sweep forgets addresses that are not locked out and whose buckets are
// full again.
func (l *limits) sweep(now time.Time) {
	t := now.UnixNano()
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for k, c := range s.m {
			if c.lockedUntil <= t && c.fails.Full(t, l.failRate) && (l.negRate == 0 || c.neg.Full(t, l.negRate)) {
				delete(s.m, k)
			}
		}
		s.mu.Unlock()
	}
}

// tooMany answers 429 rate_limited, retry after wait.
func (l *limits) tooMany(w http.ResponseWriter, wait time.Duration, msg string) {
	l.limited.Add(1)
	w.Header()["Retry-After"] = []string{strconv.Itoa(max(1, int((wait+time.Second-1)/time.Second)))}
	errorf(w, http.StatusTooManyRequests, CodeRateLimited, msg)
}

// guard answers 429 and reports false when r's address is locked out.
// It returns the address, for failed.
func (l *limits) guard(w http.ResponseWriter, r *http.Request, now time.Time) (netip.Addr, bool) {
	ip, ok := l.clientAddr(r)
	if !ok {
		return ip, true
	}
	if wait := l.lockedOut(ip, now); wait > 0 {
		l.tooMany(w, wait, "too many failed authentications from your address; retry later")
		return ip, false
	}
	return ip, true
}
