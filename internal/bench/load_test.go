package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/bus/natsserver/natstest"
)

var ackedReply = []byte(`{"node":"n","final":true,"status":"acked","delivered":1,"acked":1,"results":{"ok":1}}`)

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func subjects(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("tether.svc.bench.conn.n.c%d", i)
	}
	return out
}

// fakeNode answers pushes after delay; drop says which to leave unanswered.
// It fails the test if a connection gets a push while one is outstanding.
type fakeNode struct {
	mu                sync.Mutex
	outstanding       map[string]int
	now, peak         int
	overlap, received int
}

func runFakeNode(t *testing.T, nc *nats.Conn, delay time.Duration, drop func(n int) bool) *fakeNode {
	t.Helper()
	f := &fakeNode{outstanding: map[string]int{}}
	_, err := nc.Subscribe("tether.svc.bench.conn.>", func(m *nats.Msg) {
		f.mu.Lock()
		f.received++
		n := f.received
		if f.outstanding[m.Subject] > 0 {
			f.overlap++
		}
		f.outstanding[m.Subject]++
		f.now++
		f.peak = max(f.peak, f.now)
		f.mu.Unlock()
		if drop != nil && drop(n) {
			return // never answered: stays outstanding
		}
		time.AfterFunc(delay, func() {
			f.mu.Lock()
			f.outstanding[m.Subject]--
			f.now--
			f.mu.Unlock()
			_ = m.Respond(ackedReply)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestClosedLoopDistinctConnections(t *testing.T) {
	s := natstest.RunServer(t)
	f := runFakeNode(t, connect(t, s.ClientURL()), 2*time.Millisecond, nil)
	p, err := newPusher(connect(t, s.ClientURL()), subjects(50), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	var windows atomic.Int32
	st := p.closedLoop(context.Background(), 20, 300*time.Millisecond, func(bool) { windows.Add(1) })
	if err := loadErr(st); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.overlap > 0 {
		t.Errorf("%d pushes went to a connection with one outstanding", f.overlap)
	}
	if f.peak > 20 {
		t.Errorf("%d pushes outstanding at once, want at most 20", f.peak)
	}
	if st.acked != st.sent || st.acked != int64(f.received) || st.failed != 0 {
		t.Errorf("sent %d, acked %d, failed %d, node got %d", st.sent, st.acked, st.failed, f.received)
	}
	// The window counts only what came back in it (how many depends on
	// the machine's load: no rate is asserted).
	if st.inWindow <= 0 || st.inWindow > st.acked {
		t.Errorf("%d acked in the window of %d", st.inWindow, st.acked)
	}
	if !st.p50.Valid() || st.p50 < 2 || st.max < st.p99 || st.p99 < st.p50 {
		t.Errorf("latencies p50 %v p99 %v max %v ms", st.p50, st.p99, st.max)
	}
	if windows.Load() != 2 {
		t.Errorf("onWindow called %d times, want 2", windows.Load())
	}
}

func TestPacedSendsOnSchedule(t *testing.T) {
	s := natstest.RunServer(t)
	f := runFakeNode(t, connect(t, s.ClientURL()), 0, nil)
	p, err := newPusher(connect(t, s.ClientURL()), subjects(100), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	start := time.Now()
	st := p.paced(context.Background(), 2000, 500*time.Millisecond, func(bool) {})
	if err := loadErr(st); err != nil {
		t.Fatal(err)
	}
	if st.sent != 1000 || st.acked != 1000 {
		t.Errorf("sent %d, acked %d; want 1000 each", st.sent, st.acked)
	}
	if el := time.Since(start); el < 499*time.Millisecond {
		t.Errorf("1000 pushes at 2000/s took %v, want 500ms", el)
	}
	f.mu.Lock()
	if f.received != 1000 {
		t.Errorf("node got %d pushes", f.received)
	}
	f.mu.Unlock()
	// The achieved rate depends on how busy the machine is: not asserted
	// (the schedule itself is: never early, above).
}

// A push nobody answers is counted lost after the expiry, and the closed
// loop goes on with another; no responders is an outcome of its own.
func TestLostAndNoResponders(t *testing.T) {
	s := natstest.RunServer(t)
	runFakeNode(t, connect(t, s.ClientURL()), 0, func(n int) bool { return n%10 == 0 })
	p, err := newPusher(connect(t, s.ClientURL()), subjects(50), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	p.expire = 100 * time.Millisecond
	st := p.closedLoop(context.Background(), 10, 300*time.Millisecond, func(bool) {})
	if st.statuses[outcomeLost] == 0 || st.statuses[bus.StatusAcked] == 0 {
		t.Fatalf("statuses %v: want some lost and some acked", st.statuses)
	}
	if st.acked+st.failed != st.sent {
		t.Errorf("acked %d + failed %d != sent %d", st.acked, st.failed, st.sent)
	}
	if loadErr(st) == nil {
		t.Error("loadErr accepted 10% lost")
	}

	q, err := newPusher(connect(t, s.ClientURL()), []string{"tether.svc.other.conn.n.x"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	st = q.closedLoop(context.Background(), 1, 50*time.Millisecond, func(bool) {})
	if st.statuses[outcomeNoResponders] == 0 || st.acked != 0 {
		t.Errorf("statuses %v: want only no_responders", st.statuses)
	}
	if loadErr(st) == nil {
		t.Error("loadErr accepted a phase with nothing acked")
	}
}

func TestReplyStatus(t *testing.T) {
	tests := []struct {
		m    *nats.Msg
		want string
	}{
		{&nats.Msg{Data: ackedReply}, bus.StatusAcked},
		{&nats.Msg{Data: []byte(`{"node":"n","final":true,"status":"timeout","delivered":1}`)}, bus.StatusTimeout},
		{&nats.Msg{Header: nats.Header{"Status": {"503"}}}, outcomeNoResponders},
		{&nats.Msg{}, outcomeMalformed},
		{&nats.Msg{Data: []byte(`{"status":`)}, outcomeMalformed},
	}
	for _, tt := range tests {
		if got := replyStatus(tt.m); got != tt.want {
			t.Errorf("replyStatus(%s) = %q, want %q", tt.m.Data, got, tt.want)
		}
	}
}
