package simrun

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/appsdk"
)

// Push targets.
const (
	targetConn      = "conn"
	targetDevice    = "device"
	targetGroup     = "group"
	targetBroadcast = "broadcast"
)

// app is the app side: it follows the connected events of the services,
// pushes on the scenario's schedule with appsdk, as an app server would,
// and accounts for every receipt. Each push carries its sequence number as
// its message ID and, in its data, its send time ({"seq":N,"t":<Unix ns>});
// the devices read both: the workers report which pushes they saw, and a
// push acked by more devices than saw it counts as lost.
type app struct {
	s      *Scenario
	client *appsdk.Client
	svcs   map[string]*appsdk.Service
	subs   []*appsdk.Subscription
	log    *slog.Logger

	devicesOf map[string][]string // service -> its device IDs, in fleet order
	groupsOf  map[string][]string // service -> its groups

	mu      sync.Mutex
	conns   map[string]string // device -> its connection ID, from the events
	foreign map[string]bool   // services where devices of other tools connect
	streams []*stream
	recs    map[uint64]*pushRec // sent, not yet checked for loss
	wg      sync.WaitGroup      // pushes waiting for their receipt
	stopped bool

	pushes, acked, offline, timeouts, lost, inflight int64
	unchecked                                        int64
	receipts, acks                                   map[string]int64
	hist, fanHist, intHist                           *hdrhistogram.Histogram
	intPushes, intAcked                              int64
	firstSend, lastSend                              time.Time
	watches                                          []ackWatch
}

// pushRec is a push awaiting its loss check.
type pushRec struct {
	done      bool  // its receipt is in
	unchecked bool  // a broadcast that other tools' devices acked too
	acked     int64 // devices that acked it
	seen      int64 // devices that saw it
	at        int64 // when its receipt came (Unix ns)
}

// stream is one (service, target) push schedule.
type stream struct {
	service, target string
	rate            float64 // pushes per second now
	size            Size
	timeout         time.Duration
	rng             *rand.Rand
	// The schedule: due(t) = base + rate × (t − since), counted from the
	// last rate change.
	base  float64
	since time.Time
	sent  int64
	// id numbers the stream; n counts its pushes. A push's sequence number
	// is id<<40 | n: the same push of the same run gets the same number,
	// whatever the order in which the streams' pushes interleave.
	id int
	n  uint64
}

// ackWatch is a wait for the first acked receipt of a push sent after a
// time.
type ackWatch struct {
	after time.Time
	ch    chan time.Time
}

func newApp(nc *nats.Conn, s *Scenario, log *slog.Logger) (*app, error) {
	client, err := appsdk.New(nc, appsdk.WithLogger(log))
	if err != nil {
		return nil, err
	}
	a := &app{
		s: s, client: client, svcs: map[string]*appsdk.Service{}, log: log,
		devicesOf: map[string][]string{}, groupsOf: map[string][]string{},
		conns: map[string]string{}, foreign: map[string]bool{}, recs: map[uint64]*pushRec{},
		receipts: map[string]int64{}, acks: map[string]int64{},
		hist: newHist(), fanHist: newHist(), intHist: newHist(),
	}
	for _, k := range s.Appliances {
		for n := 1; n <= k.Count; n++ {
			a.devicesOf[k.Service] = append(a.devicesOf[k.Service], fmt.Sprintf("%s%s-%06d", s.IDPrefix, k.Kind, n))
		}
	}
	for _, svc := range s.services() {
		for _, g := range s.groups(svc) {
			a.groupsOf[svc] = append(a.groupsOf[svc], s.groupName(g))
		}
		sv, err := client.Service(svc)
		if err != nil {
			client.Close()
			return nil, err
		}
		a.svcs[svc] = sv
		sub, err := sv.HandleEvents(a.onEvent)
		if err != nil {
			a.close()
			return nil, err
		}
		a.subs = append(a.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		a.close()
		return nil, fmt.Errorf("simrun: app: %w", err)
	}
	for _, p := range s.App.Pushes {
		for _, t := range []struct {
			name string
			rate float64
		}{{targetConn, p.Conn}, {targetDevice, p.Device}, {targetGroup, p.Group}, {targetBroadcast, p.Broadcast}} {
			if t.rate <= 0 {
				continue
			}
			h := fnv.New64a()
			_, _ = h.Write([]byte(p.Service + "/" + t.name))
			a.streams = append(a.streams, &stream{
				id:      len(a.streams) + 1,
				service: p.Service, target: t.name, rate: t.rate, size: p.PayloadBytes, timeout: p.AckTimeout,
				rng: rand.New(rand.NewPCG(s.Seed, h.Sum64())),
			})
		}
	}
	return a, nil
}

func (a *app) onEvent(ev appsdk.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !strings.HasPrefix(ev.Device, a.s.IDPrefix) {
		// Another tool's device: a broadcast to its service reaches it too.
		if ev.Type == appsdk.EventConnected {
			a.foreign[ev.Service] = true
		}
		return
	}
	switch ev.Type {
	case appsdk.EventConnected:
		a.conns[ev.Device] = ev.Conn
	case appsdk.EventDisconnected:
		if a.conns[ev.Device] == ev.Conn {
			delete(a.conns, ev.Device)
		}
	}
}

// run sends the pushes from start until end, then waits for their
// receipts (at most until ctx ends).
func (a *app) run(ctx context.Context, start, end time.Time) {
	if len(a.streams) == 0 {
		return
	}
	a.mu.Lock()
	for _, st := range a.streams {
		st.since, st.base = start, 0
	}
	a.firstSend = start
	a.mu.Unlock()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		now := time.Now()
		if now.After(end) {
			now = end
		}
		a.sendDue(now)
		if !now.Before(end) {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	a.mu.Lock()
	a.lastSend = end
	a.mu.Unlock()
}

// sendDue sends every push due by now.
func (a *app) sendDue(now time.Time) {
	for _, st := range a.streams {
		a.mu.Lock()
		due := int64(st.base + st.rate*now.Sub(st.since).Seconds())
		n := due - st.sent
		st.sent = max(st.sent, due)
		a.mu.Unlock()
		for range n {
			a.push(st)
		}
	}
}

// setFactor multiplies a service's push rates by f from now on (f = 1 to
// restore them).
func (a *app) setFactor(service string, f float64) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.s.App.Pushes {
		if p.Service != service {
			continue
		}
		for _, st := range a.streams {
			if st.service != service {
				continue
			}
			if !st.since.IsZero() {
				st.base += st.rate * now.Sub(st.since).Seconds()
				st.since = now
			}
			switch st.target {
			case targetConn:
				st.rate = p.Conn * f
			case targetDevice:
				st.rate = p.Device * f
			case targetGroup:
				st.rate = p.Group * f
			case targetBroadcast:
				st.rate = p.Broadcast * f
			}
		}
	}
}

// push sends one push of st.
func (a *app) push(st *stream) {
	a.mu.Lock()
	if a.stopped {
		a.mu.Unlock()
		return
	}
	a.pushes++
	a.intPushes++
	if a.inflight >= int64(a.s.App.MaxInflight) {
		a.receipts["skipped"]++
		a.mu.Unlock()
		return
	}
	st.n++
	seq := uint64(st.id)<<40 | st.n
	a.recs[seq] = &pushRec{}
	a.inflight++
	target := a.pickLocked(st)
	size := st.size.Min
	if st.size.Max > st.size.Min {
		size += st.rng.IntN(st.size.Max - st.size.Min + 1)
	}
	a.wg.Add(1)
	a.mu.Unlock()

	sent := time.Now()
	id := strconv.FormatUint(seq, 10)
	data := payload(seq, sent, size)
	svc := a.svcs[st.service]
	kind := st.target
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), st.timeout)
		defer cancel()
		opts := []appsdk.PushOption{appsdk.WithMsgID(id)}
		var r appsdk.Receipt
		var err error
		switch {
		case kind == targetConn && strings.Contains(target, "."):
			r, err = svc.PushConn(ctx, target, data, opts...)
		case kind == targetConn || kind == targetDevice:
			r, err = svc.PushDevice(ctx, target, data, opts...)
		case kind == targetGroup:
			r, err = svc.PushGroup(ctx, target, data, opts...)
		default:
			r, err = svc.PushAll(ctx, data, opts...)
		}
		a.receipt(seq, kind, st.service, sent, r, err)
	}()
}

// pickLocked picks the target of a push of st: a connection of a random
// device of the service (a device of its own when none is connected), a
// random device, or a random group. a.mu held.
func (a *app) pickLocked(st *stream) string {
	devs := a.devicesOf[st.service]
	switch st.target {
	case targetConn:
		i := st.rng.IntN(len(devs))
		for try := range min(len(devs), 16) {
			if c, ok := a.conns[devs[(i+try)%len(devs)]]; ok {
				return c
			}
		}
		return devs[i]
	case targetDevice:
		return devs[st.rng.IntN(len(devs))]
	case targetGroup:
		gs := a.groupsOf[st.service]
		return gs[st.rng.IntN(len(gs))]
	}
	return ""
}

// payload is a push's data: its sequence number and send time (Unix ns),
// padded to size bytes.
func payload(seq uint64, sent time.Time, size int) []byte {
	b := fmt.Appendf(make([]byte, 0, size+48), `{"seq":%d,"t":%d,"pad":"`, seq, sent.UnixNano())
	for len(b) < size-2 {
		b = append(b, 'x')
	}
	return append(b, '"', '}')
}

// receipt accounts for a push's receipt.
func (a *app) receipt(seq uint64, kind, service string, sent time.Time, r appsdk.Receipt, err error) {
	now := time.Now()
	status := string(r.Status)
	if err != nil {
		status = "error"
		a.log.Debug("push failed", "err", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inflight--
	a.receipts[status]++
	for res, n := range r.Results {
		a.acks[res] += int64(n)
	}
	if rec := a.recs[seq]; rec != nil {
		rec.done, rec.acked, rec.at = true, int64(r.Acked), now.UnixNano()
		if kind == targetBroadcast && r.Delivered > len(a.devicesOf[service]) {
			// More connections than the run has devices: another tool's
			// (connected before the run saw any event) share the service.
			a.foreign[service] = true
		}
		rec.unchecked = kind == targetBroadcast && a.foreign[service]
	}
	switch r.Status {
	case appsdk.StatusAcked:
		if err != nil {
			break
		}
		a.acked++
		a.intAcked++
		if kind == targetGroup || kind == targetBroadcast {
			recordUS(a.fanHist, r.Latency)
		} else {
			recordUS(a.hist, r.Latency)
			recordUS(a.intHist, r.Latency)
		}
		kept := a.watches[:0]
		for _, w := range a.watches {
			if !sent.Before(w.after) {
				w.ch <- now
				continue
			}
			kept = append(kept, w)
		}
		a.watches = kept
	case appsdk.StatusOffline:
		a.offline++
	case appsdk.StatusTimeout:
		a.timeouts++
	}
}

// firstAckAfter returns a channel that receives the time of the first
// acked receipt of a push sent at or after t.
func (a *app) firstAckAfter(t time.Time) <-chan time.Time {
	ch := make(chan time.Time, 1)
	a.mu.Lock()
	a.watches = append(a.watches, ackWatch{after: t, ch: ch})
	a.mu.Unlock()
	return ch
}

// addSeen records that n devices saw push seq.
func (a *app) addSeen(seq, n uint64) {
	a.mu.Lock()
	if rec := a.recs[seq]; rec != nil {
		rec.seen += int64(n)
	}
	a.mu.Unlock()
}

// verify checks for loss every push whose receipt came before upTo (Unix
// ns): every device report made after upTo holds its sightings.
func (a *app) verify(upTo int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for seq, rec := range a.recs {
		if rec.done && rec.at < upTo {
			if rec.unchecked {
				a.unchecked++
				delete(a.recs, seq)
				continue
			}
			if rec.acked > rec.seen {
				a.lost += rec.acked - rec.seen
				a.log.Warn("push acked but not seen by the devices", "seq", seq, "acked", rec.acked, "seen", rec.seen)
			}
			delete(a.recs, seq)
		}
	}
}

// stop stops sending and waits (up to limit) for the receipts of the
// pushes sent.
func (a *app) stop(limit time.Duration) {
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
	done := make(chan struct{})
	go func() {
		a.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(limit):
		a.log.Warn("push receipts still outstanding", "limit", limit)
	}
}

func (a *app) close() {
	for _, s := range a.subs {
		_ = s.Unsubscribe()
	}
	a.client.Close()
	a.wg.Wait()
}

// appTotals are the app side's figures.
type appTotals struct {
	pushes, acked, offline, timeouts, lost int64
	unchecked                              int64
	receipts, acks                         map[string]int64
	hist, fanHist                          *hdrhistogram.Histogram
	window                                 time.Duration
}

func (a *app) totals() appTotals {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := appTotals{
		pushes: a.pushes, acked: a.acked, offline: a.offline, timeouts: a.timeouts, lost: a.lost, unchecked: a.unchecked,
		receipts: cloneMap(a.receipts), acks: cloneMap(a.acks),
		hist: a.hist.Clone(), fanHist: a.fanHist.Clone(),
	}
	if !a.firstSend.IsZero() {
		end := a.lastSend
		if end.IsZero() {
			end = time.Now()
		}
		t.window = end.Sub(a.firstSend)
	}
	return t
}

// interval returns the pushes sent and acked since the last call, and the
// percentiles of the acked unicast pushes' latencies (NaN without any).
func (a *app) interval() (pushes, acked int64, p50, p99, p999 float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	pushes, acked = a.intPushes, a.intAcked
	p50, p99, p999 = math.NaN(), math.NaN(), math.NaN()
	if a.intHist.TotalCount() > 0 {
		p50, p99, p999 = usToMS(a.intHist.ValueAtQuantile(50)), usToMS(a.intHist.ValueAtQuantile(99)), usToMS(a.intHist.ValueAtQuantile(99.9))
	}
	a.intPushes, a.intAcked = 0, 0
	a.intHist.Reset()
	return
}

func usToMS(us int64) float64 { return float64(us) / 1000 }

func cloneMap(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// connected counts the devices the app knows a connection of.
func (a *app) connected() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.conns)
}
