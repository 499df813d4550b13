package directory

import (
	"cmp"
	"encoding/json"
	"hash/fnv"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/tetherhq/tether/store"
)

// snapshot is an immutable, precomputed copy of the map, swapped in whole
// by refresh (an atomic pointer), so that lookups take no lock. Everything
// a lookup needs that does not depend on the request is computed here: the
// best-first node list of every (service, tier), its JSON pieces and its
// ETag.
type snapshot struct {
	version int64
	// readAt is when the map was read from the store (unix nanoseconds).
	readAt int64
	// liveAt is the time liveness was judged at when it was read: readAt,
	// less the length of a store outage just over (see Server.asOf).
	liveAt   int64
	services map[string]*service
	// nodes and live count the nodes in the map and those listed.
	nodes, live int
	// beats are the nodes' last heartbeats (unix nanoseconds), carried
	// over a store reset (Server.adoptEpoch).
	beats map[string]int64

	// mapBody is the /v1/map answer as of readAt, valid until mapUntil
	// (the earliest expiry of a listed node).
	mapBody  []byte
	mapETag  []string
	mapUntil int64
}

type service struct {
	name        string
	defaultTier string
	tiers       map[string]*group
}

// group is the node list of one (service, tier).
type group struct {
	service, tier string
	version       int64
	// assigned counts the node IDs assigned to the tier, listed or not.
	assigned int
	// members are the active nodes live at liveAt, best first.
	members []member
	// prefix is `{"service":"S","tier":"T","handshakeUrl":[`.
	prefix []byte
	// allUntil is the earliest expiry among members: before it, every
	// member is live.
	allUntil int64
	// sum is the order-independent hash of the members' identities; etag
	// is the ETag of the whole list.
	sum  uint64
	etag []string
}

type member struct {
	id      string
	url     string
	urlJSON []byte // the URL as a JSON string
	score   float64
	until   int64 // heartbeat + dead-after, unix nanoseconds
	hash    uint64
}

// build makes a snapshot of m, read at readAt and judged at liveAt,
// listing the active nodes
// whose heartbeat is younger than ttl.
func build(m store.Map, readAt, liveAt time.Time, ttl time.Duration) *snapshot {
	at := liveAt.UnixNano()
	s := &snapshot{version: m.Version, readAt: readAt.UnixNano(), liveAt: at, services: make(map[string]*service, len(m.Services)), nodes: len(m.Nodes), mapUntil: math.MaxInt64}
	listed := map[string]bool{}
	s.beats = make(map[string]int64, len(m.Nodes))
	for id, n := range m.Nodes {
		if !n.Heartbeat.IsZero() {
			s.beats[id] = n.Heartbeat.UnixNano()
		}
	}
	for name, sv := range m.Services {
		out := &service{name: name, defaultTier: sv.DefaultTier, tiers: make(map[string]*group, len(sv.Tiers))}
		if out.defaultTier == "" {
			out.defaultTier = store.DefaultTier
		}
		for tier, ids := range sv.Tiers {
			g := &group{service: name, tier: tier, version: m.Version, assigned: len(ids), allUntil: math.MaxInt64}
			seen := map[string]bool{}
			for _, id := range ids {
				n, ok := m.Nodes[id]
				if !ok || seen[n.URL] || n.State != store.StateActive || n.Load.NATSDown || !n.Live(liveAt, ttl) {
					continue
				}
				seen[n.URL] = true
				listed[id] = true
				q, _ := json.Marshal(n.URL)
				mb := member{id: id, url: n.URL, urlJSON: q, until: n.Heartbeat.Add(ttl).UnixNano(), hash: memberHash(id, n.URL)}
				g.members = append(g.members, mb)
				g.allUntil = min(g.allUntil, mb.until)
				g.sum += mb.hash
			}
			scoreMembers(g.members, m.Nodes)
			slices.SortStableFunc(g.members, func(a, b member) int {
				return cmp.Or(cmp.Compare(a.score, b.score), cmp.Compare(a.id, b.id))
			})
			g.prefix = []byte(`{"service":` + quote(name) + `,"tier":` + quote(tier) + `,"handshakeUrl":[`)
			g.etag = []string{etag(m.Version, name, tier, g.sum)}
			s.mapUntil = min(s.mapUntil, g.allUntil)
			out.tiers[tier] = g
		}
		s.services[name] = out
	}
	s.live = len(listed)
	s.mapBody = s.mapJSON(at)
	s.mapETag = []string{etag(m.Version, "", "", fnvBytes(s.mapBody))}
	return s
}

// scoreMembers sets each member's load score: 0 idle, 1 full. It is the
// larger of the connection ratio and the CPU load. The connection ratio is
// connections / capacity; a node without a capacity is measured against the
// largest capacity (or connection count) in the list.
func scoreMembers(ms []member, nodes map[string]store.Node) {
	ref := 0
	for _, mb := range ms {
		n := nodes[mb.id]
		ref = max(ref, n.Capacity, n.Load.Connections)
	}
	for i := range ms {
		n := nodes[ms[i].id]
		c := n.Capacity
		if c <= 0 {
			c = ref
		}
		ratio := 0.0
		if c > 0 {
			ratio = float64(n.Load.Connections) / float64(c)
		}
		ms[i].score = max(ratio, min(max(n.Load.CPU, 0), 1))
	}
}

func memberHash(id, url string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write([]byte(url))
	return h.Sum64()
}

func fnvBytes(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

// etag is a weak ETag: lists with the same nodes are equivalent whatever
// their (randomized) order.
func etag(version int64, service, tier string, sum uint64) string {
	h := fnv.New64a()
	h.Write([]byte(service))
	h.Write([]byte{0})
	h.Write([]byte(tier))
	var b [8]byte
	for i := range b {
		b[i] = byte(sum >> (8 * i))
	}
	h.Write(b[:])
	return `W/"` + strconv.FormatInt(version, 10) + "-" + strconv.FormatUint(h.Sum64(), 16) + `"`
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// live returns the members live at asOf, in a slice that is g.members
// itself when all are (the common case: no allocation).
func (g *group) live(asOf int64) []member {
	if asOf < g.allUntil {
		return g.members
	}
	var out []member
	for _, mb := range g.members {
		if asOf < mb.until {
			out = append(out, mb)
		}
	}
	return out
}

// etagOf returns the ETag of the list ms, which is g.members or a subset.
func (g *group) etagOf(ms []member) []string {
	if len(ms) == len(g.members) {
		return g.etag
	}
	var sum uint64
	for _, mb := range ms {
		sum += mb.hash
	}
	return []string{etag(g.version, g.service, g.tier, sum)}
}

// maxStackOrder is the longest list ordered without allocating.
const maxStackOrder = 32

// appendBody appends the lookup answer for ms to buf: the members best
// first, each moved by a random amount up to spread on the load scale.
func (g *group) appendBody(buf []byte, ms []member, spread float64) []byte {
	var idxArr [maxStackOrder]int
	idx := spreadOrder(ms, spread, idxArr[:0])
	buf = append(buf, g.prefix...)
	for n, i := range idx {
		if n > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, ms[i].urlJSON...)
	}
	return append(buf, "]}\n"...)
}

// spreadOrder appends to idx the indexes of ms ordered by score, each
// score raised by a random amount in [0, spread). It allocates only for
// lists longer than maxStackOrder.
func spreadOrder(ms []member, spread float64, idx []int) []int {
	var keysArr [maxStackOrder]float64
	keys := keysArr[:0]
	if len(ms) > maxStackOrder {
		keys = make([]float64, 0, len(ms))
	}
	for i := range ms {
		k := ms[i].score
		if spread > 0 {
			k += spread * rand.Float64()
		}
		keys = append(keys, k)
		idx = append(idx, i)
	}
	// Insertion sort: the lists are short and nearly sorted already.
	for i := 1; i < len(idx); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
			idx[j], idx[j-1] = idx[j-1], idx[j]
		}
	}
	return idx
}

// mapAnswer is the /v1/map answer (12th embodiment).
type mapAnswer struct {
	Version  int64                 `json:"version"`
	Services map[string]mapService `json:"services"`
}

type mapService struct {
	DefaultTier string `json:"default_tier"`
	// Tiers maps each tier to its live active nodes' URLs, best first; an
	// empty list means that no node of the tier is live.
	Tiers map[string][]string `json:"tiers"`
}

// mapJSON renders the map as of asOf.
func (s *snapshot) mapJSON(asOf int64) []byte {
	a := mapAnswer{Version: s.version, Services: make(map[string]mapService, len(s.services))}
	for _, name := range slices.Sorted(maps.Keys(s.services)) {
		sv := s.services[name]
		ms := mapService{DefaultTier: sv.defaultTier, Tiers: make(map[string][]string, len(sv.tiers))}
		for tier, g := range sv.tiers {
			urls := []string{}
			for _, mb := range g.live(asOf) {
				urls = append(urls, mb.url)
			}
			ms.Tiers[tier] = urls
		}
		a.Services[name] = ms
	}
	b, _ := json.Marshal(a)
	return append(b, '\n')
}
