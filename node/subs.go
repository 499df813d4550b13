package node

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

const subShards = 32

// subs holds the node's reference-counted NATS subscriptions for device,
// group and service subjects: one subscription per distinct subject however
// many local connections need it. Subscriptions deliver into a few shared
// channels (no goroutine per subscription); a subject always maps to the
// same channel, so pushes on one subject are handled in order.
type subs struct {
	nc      *nats.Conn
	retired atomic.Int64 // pushes dropped by subscriptions since removed
	// linger lists entries whose last reference went, oldest first (they
	// all linger as long, so this is also expiry order).
	lmu    sync.Mutex
	linger []lingering
	seed   maphash.Seed
	chans  []chan *nats.Msg
	shards [subShards]subShard
}

type subShard struct {
	mu sync.Mutex
	m  map[string]*subEntry
}

type subEntry struct {
	sub  *nats.Subscription
	refs int
	gen  uint64 // bumped each time the entry starts lingering
}

// lingerFor is how long a subscription is kept once its last connection
// left: pushes that were on their way meanwhile (routed here before the
// server saw the unsubscribe, or sent by apps that still expect this
// node) are answered "offline" instead of going unanswered. A device's
// subject stops lingering as soon as the device connects elsewhere (its
// takeover arrives), so that it does not answer "offline" beside the
// node that now holds the device.
const lingerFor = 2 * time.Second

type lingering struct {
	subject string
	gen     uint64
	until   int64 // unix nanos
}

func newSubs(nc *nats.Conn, chans []chan *nats.Msg) *subs {
	s := &subs{nc: nc, seed: maphash.MakeSeed(), chans: chans}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*subEntry)
	}
	return s
}

func (s *subs) shard(subject string) (*subShard, chan *nats.Msg) {
	h := maphash.String(s.seed, subject)
	return &s.shards[h%subShards], s.chans[h%uint64(len(s.chans))]
}

// ref takes a reference on subject, subscribing on the first one; it
// reports whether it subscribed.
func (s *subs) ref(subject string) (bool, error) {
	sh, ch := s.shard(subject)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.m[subject]; e != nil {
		e.refs++ // a lingering entry is taken back: its gen no longer matches
		return false, nil
	}
	sub, err := s.nc.ChanSubscribe(subject, ch)
	if err != nil {
		return false, fmt.Errorf("node: subscribe %s: %w", subject, err)
	}
	sh.m[subject] = &subEntry{sub: sub, refs: 1}
	return true, nil
}

// unref drops a reference on subject. After the last one the
// subscription lingers for lingerFor (see sweep) when linger is set, and
// is removed at once otherwise.
func (s *subs) unref(subject string, linger bool) {
	sh, _ := s.shard(subject)
	sh.mu.Lock()
	e := sh.m[subject]
	if e == nil {
		sh.mu.Unlock()
		return
	}
	if e.refs--; e.refs > 0 {
		sh.mu.Unlock()
		return
	}
	e.gen++
	if !linger {
		s.remove(sh, subject, e)
		sh.mu.Unlock()
		return
	}
	l := lingering{subject: subject, gen: e.gen, until: time.Now().Add(lingerFor).UnixNano()}
	sh.mu.Unlock()
	s.lmu.Lock()
	s.linger = append(s.linger, l)
	s.lmu.Unlock()
}

// stopLinger removes subject's subscription now if it only lingers (no
// connection holds it).
func (s *subs) stopLinger(subject string) {
	sh, _ := s.shard(subject)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.m[subject]; e != nil && e.refs == 0 {
		s.remove(sh, subject, e)
	}
}

// remove unsubscribes e, keeping count of what it dropped; sh.mu is held.
func (s *subs) remove(sh *subShard, subject string, e *subEntry) {
	delete(sh.m, subject)
	if d, err := e.sub.Dropped(); err == nil && d > 0 {
		s.retired.Add(int64(d))
	}
	_ = e.sub.Unsubscribe()
}

// sweep unsubscribes the entries that have lingered long enough without
// being taken back.
func (s *subs) sweep(now time.Time) {
	t := now.UnixNano()
	s.lmu.Lock()
	i := 0
	for i < len(s.linger) && s.linger[i].until <= t {
		i++
	}
	due := s.linger[:i:i]
	s.linger = s.linger[i:]
	if len(s.linger) == 0 {
		s.linger = nil // let a long queue's array go
	}
	s.lmu.Unlock()
	for _, l := range due {
		sh, _ := s.shard(l.subject)
		sh.mu.Lock()
		if e := sh.m[l.subject]; e != nil && e.refs == 0 && e.gen == l.gen {
			s.remove(sh, l.subject, e)
		}
		sh.mu.Unlock()
	}
}

// dropped returns the pushes NATS dropped for the node's device, group and
// service subscriptions because their queue was full, since the start.
func (s *subs) dropped() int64 {
	k := s.retired.Load()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, e := range sh.m {
			if d, err := e.sub.Dropped(); err == nil {
				k += int64(d)
			}
		}
		sh.mu.Unlock()
	}
	return k
}

// count returns the number of live subscriptions.
func (s *subs) count() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// closeAll unsubscribes everything.
func (s *subs) closeAll() {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			_ = e.sub.Unsubscribe()
			delete(sh.m, k)
		}
		sh.mu.Unlock()
	}
}

// flusher coalesces NATS flushes: callers that need their subscriptions
// confirmed by the server share one round trip.
type flusher struct {
	nc      *nats.Conn
	spawn   func(func()) bool
	mu      sync.Mutex
	waiters []func(error)
	running bool
}

// flushAsync calls done once the server has processed everything sent
// before the call, or the flush failed. done runs on the flusher's
// goroutine and must not block.
func (f *flusher) flushAsync(done func(error)) {
	f.mu.Lock()
	f.waiters = append(f.waiters, done)
	start := !f.running
	f.running = true
	f.mu.Unlock()
	if start && !f.spawn(f.loop) {
		f.mu.Lock()
		w := f.waiters
		f.waiters, f.running = nil, false
		f.mu.Unlock()
		for _, done := range w {
			done(errStopping)
		}
	}
}

// errStopping is what flushes requested during the node's stop fail with.
var errStopping = errors.New("node: stopping")

func (f *flusher) loop() {
	for {
		f.mu.Lock()
		w := f.waiters
		f.waiters = nil
		if len(w) == 0 {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		err := f.nc.FlushTimeout(5 * time.Second)
		for _, done := range w {
			done(err)
		}
	}
}
