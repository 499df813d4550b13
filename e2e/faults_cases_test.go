package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/appsdk"
	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/internal/testutil"
	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/store"
	"github.com/tetherhq/tether/token"
)

// waitSent waits until n more pushes were sent (and receipted or not).
func (c *cluster) waitSent(n int) {
	c.t.Helper()
	c.book.mu.Lock()
	target := c.book.sent + n
	c.book.mu.Unlock()
	testutil.CheckFor(c.t, 30*time.Second, 10*time.Millisecond, func() error {
		c.book.mu.Lock()
		defer c.book.mu.Unlock()
		if c.book.sent < target {
			return fmt.Errorf("%d pushes sent, waiting for %d", c.book.sent, target)
		}
		return nil
	})
}

// devicesOn returns the devices connected to node id, with their
// connection IDs.
func (c *cluster) devicesOn(id string) map[string]string {
	out := map[string]string{}
	for name, d := range c.devs {
		if w, ok := d.d.Welcome(); ok {
			if protocol.ConnNode(w.Conn) == id {
				out[name] = w.Conn
			}
		}
	}
	return out
}

// waitMoved waits until none of devs is on node id (each connected
// elsewhere) and returns how long after since that was.
func (c *cluster) waitMoved(devs map[string]string, id string, since time.Time) time.Duration {
	c.t.Helper()
	var took time.Duration
	testutil.CheckFor(c.t, 20*time.Second, 5*time.Millisecond, func() error {
		for name := range devs {
			if n := c.devs[name].node(); n == "" || n == id {
				return fmt.Errorf("device %s still on %q", name, n)
			}
		}
		took = time.Since(since)
		return nil
	})
	return took
}

// A node killed with SIGKILL under push load: its devices are back on
// other nodes at once, each of its connections is announced node_lost
// exactly once, the pushes that were on it come back as timeouts (never
// acked), and every device is reachable again.
func TestFaultNodeKilled(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	c.addDevices(20, nil)
	c.waitRegistered(60)
	const victim = "node-2"
	lost := c.devicesOn(victim)
	if len(lost) != 20 {
		t.Fatalf("%d devices on %s, want 20", len(lost), victim)
	}
	stop := c.load(8, 2*time.Second)
	c.waitSent(300)
	mark := c.events.mark()
	killed := time.Now()
	c.signal(victim, syscall.SIGKILL)
	back := c.waitMoved(lost, victim, killed)
	// node_lost, once per connection, from whoever reaped it.
	var announced time.Duration
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		evs, _ := c.events.since(mark)
		n := 0
		for _, ev := range evs {
			if ev.Type == bus.EventDisconnected && ev.Reason == bus.ReasonNodeLost {
				n++
			}
		}
		if n < len(lost) {
			return fmt.Errorf("%d of %d connections announced node_lost", n, len(lost))
		}
		announced = time.Since(killed)
		return nil
	})
	c.waitSent(300)
	stop()
	recovered := c.untilAllAcked(20 * time.Second)
	summary := c.book.check(t, false)
	// Exactly once, and only the victim's connections.
	evs, _ := c.events.since(mark)
	byConn := map[string]int{}
	for _, ev := range evs {
		if ev.Type == bus.EventDisconnected && ev.Reason == bus.ReasonNodeLost {
			if ev.Node != victim {
				t.Errorf("node_lost for a connection of %s: %+v", ev.Node, ev)
			}
			byConn[ev.Conn]++
		}
	}
	for dev, conn := range lost {
		if byConn[conn] != 1 {
			t.Errorf("%s's connection %s announced node_lost %d times", dev, conn, byConn[conn])
		}
	}
	if len(byConn) != len(lost) {
		t.Errorf("%d connections announced node_lost, want %d", len(byConn), len(lost))
	}
	t.Logf("SIGKILL %s: %d devices back on other nodes after %v; node_lost for all after %v; every device acked again %v after the stop of the load; %s",
		victim, len(lost), back.Round(time.Millisecond), announced.Round(time.Millisecond), recovered.Round(time.Millisecond), summary)
}

// NATS restarted under push load: devices stay connected, a device that
// arrives meanwhile is refused at once with 4104 (unavailable, retry), the
// pushes of the outage fail or time out (never acked), and pushes are
// acked again once the nodes are back.
func TestFaultNATSRestart(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	c.addDevices(15, nil)
	c.waitRegistered(45)
	connects := map[string]int64{}
	for id, d := range c.devs {
		connects[id] = d.d.Stats().Connects
	}
	stop := c.load(8, time.Second)
	c.waitSent(300)

	c.stopNATS()
	down := time.Now()
	// The nodes tell the registry they lost NATS: directories stop sending
	// devices to them.
	natsDown := func(want bool) func() error {
		return func() error {
			for _, id := range c.order {
				rec, err := c.st.Node(context.Background(), id)
				if err != nil || rec.Load.NATSDown != want {
					return fmt.Errorf("%s: nats_down %v (%v), want %v", id, rec.Load.NATSDown, err, want)
				}
			}
			return nil
		}
	}
	// A device arriving during the outage.
	var refusedIn atomic.Int64
	refused := make(chan protocol.CloseCode, 16)
	tok, _ := c.keys.Issue("vacuum", "late", token.IssueOptions{})
	late, err := simulator.NewDevice(simulator.DeviceConfig{
		Service: "vacuum", Token: tok, Nodes: []string{c.nodes["node-1"].url},
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		OnClose: func(code protocol.CloseCode, _ string) {
			refusedIn.CompareAndSwap(0, int64(time.Since(down)))
			select {
			case refused <- code:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	lctx, lcancel := context.WithCancel(context.Background())
	ldone := make(chan struct{})
	go func() { defer close(ldone); _ = late.Run(lctx) }()
	defer func() { lcancel(); <-ldone }()
	select {
	case code := <-refused:
		if code != protocol.CloseInternal {
			t.Errorf("device connecting while NATS is down: close %d, want %d", code, protocol.CloseInternal)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("device connecting while NATS is down: no answer in 10s")
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, natsDown(true))
	// The outage lasts a second in all.
	time.Sleep(time.Until(down.Add(time.Second)))
	c.startNATS(c.natsPort)
	up := time.Now()
	recovered := c.untilAllAcked(30 * time.Second)
	stop()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, natsDown(false))
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if _, err := late.WaitConnected(wctx); err != nil {
		t.Errorf("the late device did not connect after NATS came back: %v", err)
	}
	summary := c.book.check(t, true)
	for id, d := range c.devs {
		if n := d.d.Stats().Connects; n != connects[id] {
			t.Errorf("device %s reconnected during the NATS restart (%d connections)", id, n-connects[id])
		}
	}
	t.Logf("NATS down 1s: late device refused with %d after %v; every device acked again %v after NATS was back; %s",
		protocol.CloseInternal, time.Duration(refusedIn.Load()).Round(time.Millisecond), recovered.Round(time.Millisecond), summary)
	_ = up
}

// Redis frozen past a node's dead-after, then restarted empty, under push
// load: pushes never notice (Redis is not on the push path), lookups keep
// answering with the live nodes, nobody is announced lost, the emptied
// store is re-seeded and the registry rewritten without duplicate
// connected events.
func TestFaultRedisFreezeAndEmpty(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	c.addDevices(10, nil)
	c.waitRegistered(30)
	mark := c.events.mark()
	stop := c.load(4, 5*time.Second)

	// Lookups, all along.
	var lookups, bad atomic.Int64
	var lastBad atomic.Value
	pctx, pcancel := context.WithCancel(context.Background())
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		hc := &http.Client{Timeout: 5 * time.Second}
		for pctx.Err() == nil {
			resp, err := hc.Get(c.dirURL + "/v1/nodes?service=vacuum")
			lookups.Add(1)
			if err != nil || resp.StatusCode != 200 {
				bad.Add(1)
				if err == nil {
					lastBad.Store(resp.Status)
				} else {
					lastBad.Store(err.Error())
				}
			}
			if resp != nil {
				resp.Body.Close()
			}
			select {
			case <-pctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	c.waitSent(100)
	frozen := time.Now()
	c.redis.Freeze()
	// Frozen for longer than a node's dead-after (1.6s).
	time.Sleep(3 * time.Second)
	c.redis.Thaw()
	thawed := time.Now()
	c.waitSent(100)

	c.redis.Restart()
	restarted := time.Now()
	t.Logf("froze at %s, thawed at %s, restarted at %s", frozen.Format("15:04:05.000"), thawed.Format("15:04:05.000"), restarted.Format("15:04:05.000"))
	var reseeded time.Duration
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		mp, err := c.st.Map(context.Background())
		if err != nil {
			return err
		}
		if len(mp.Services["vacuum"].Tiers["free"]) != 3 {
			return fmt.Errorf("vacuum not seeded again: %+v", mp.Services)
		}
		live := 0
		for _, n := range mp.Nodes {
			if n.Live(time.Now(), store.DeadAfter(faultHeartbeat)) {
				live++
			}
		}
		if live != 3 {
			return fmt.Errorf("%d live nodes", live)
		}
		reseeded = time.Since(restarted)
		return nil
	})
	defer func() {
		if t.Failed() {
			for _, id := range c.order {
				t.Logf("%s output:\n%s", id, c.nodes[id].p.out.String())
			}
		}
	}()
	c.waitRegistered(30)
	registered := time.Since(restarted)
	c.waitSent(100)
	stop()
	pcancel()
	<-polled
	summary := c.book.check(t, false)
	c.book.mu.Lock()
	for st, n := range c.book.statuses {
		if st != appsdk.StatusAcked {
			t.Errorf("%d pushes %s: Redis is not on the push path", n, st)
		}
	}
	c.book.mu.Unlock()
	if n := bad.Load(); n > 0 {
		t.Errorf("%d of %d lookups failed (last: %v)", n, lookups.Load(), lastBad.Load())
	}
	evs, _ := c.events.since(mark)
	for _, ev := range evs {
		t.Errorf("event during the Redis faults: %+v", ev)
	}
	t.Logf("Redis frozen 3s, then restarted empty: re-seeded with 3 live nodes %v after the restart, registry complete after %v; %d lookups, %d failed; %s",
		reseeded.Round(time.Millisecond), registered.Round(time.Millisecond), lookups.Load(), bad.Load(), summary)
}

// A node stopped gracefully (SIGTERM) under push load: its devices move
// to the other nodes, it exits 0, nothing is announced node_lost, and
// every push is accounted for.
func TestFaultGracefulDrain(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	c.addDevices(15, nil)
	c.waitRegistered(45)
	const leaving = "node-1"
	moving := c.devicesOn(leaving)
	mark := c.events.mark()
	stop := c.load(8, 2*time.Second)
	c.waitSent(300)
	began := time.Now()
	c.signal(leaving, syscall.SIGTERM)
	moved := c.waitMoved(moving, leaving, began)
	if err := c.nodes[leaving].p.cmd.Wait(); err != nil {
		t.Errorf("%s exited with %v; output:\n%s", leaving, err, c.nodes[leaving].p.out.String())
	}
	exited := time.Since(began)
	c.waitSent(300)
	stop()
	recovered := c.untilAllAcked(20 * time.Second)
	summary := c.book.check(t, false)
	evs, _ := c.events.since(mark)
	left := 0
	for _, ev := range evs {
		if ev.Reason == bus.ReasonNodeLost {
			t.Errorf("node_lost during a graceful stop: %+v", ev)
		}
		if ev.Type == bus.EventDisconnected && ev.Node == leaving {
			left++
		}
	}
	if left != len(moving) {
		t.Errorf("%d disconnected events from %s, want %d", left, leaving, len(moving))
	}
	t.Logf("SIGTERM %s: %d devices moved after %v, exited after %v; every device acked %v after the load stopped; %s",
		leaving, len(moving), moved.Round(time.Millisecond), exited.Round(time.Millisecond), recovered.Round(time.Millisecond), summary)
}

// A device that stops reading, beside healthy ones on the same node: it is
// closed as a slow consumer (4101), its pushes are never acked, and the
// healthy devices' pushes are all acked meanwhile.
func TestFaultSlowConsumer(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 1)
	c.addDevices(10, nil)
	slow := c.addDevice("vac-slow", []string{c.nodes["node-1"].url}, func(_ *simulator.DeviceConfig, d *device) {
		d.block = make(chan struct{})
	})
	slowConn := ""
	if w, ok := slow.d.Welcome(); ok {
		slowConn = w.Conn
	}
	c.waitRegistered(11)
	mark := c.events.mark()
	stop := c.load(4, 5*time.Second)
	// 60 pushes of 200 KB: 12 MB for a device that reads nothing.
	var wg sync.WaitGroup
	for range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.book.pushPadded(c.app, "vac-slow", 3*time.Second, 200<<10)
		}()
	}
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		evs, _ := c.events.since(mark)
		for _, ev := range evs {
			if ev.Type == bus.EventDisconnected && ev.Conn == slowConn {
				if ev.Reason != "slow_consumer" {
					return fmt.Errorf("slow device disconnected with reason %q", ev.Reason)
				}
				return nil
			}
		}
		return fmt.Errorf("slow device not closed yet")
	})
	wg.Wait()
	c.waitSent(200)
	stop()
	close(slow.block)
	summary := c.book.check(t, false)
	c.book.mu.Lock()
	for seq, dev := range c.book.target {
		st := c.book.status[seq]
		if dev == "vac-slow" && st == appsdk.StatusAcked {
			t.Errorf("push %d to the slow device acked", seq)
		}
		if dev != "vac-slow" && st != appsdk.StatusAcked {
			t.Errorf("push %d to healthy %s: %s", seq, dev, st)
		}
	}
	c.book.mu.Unlock()
	t.Logf("slow consumer closed; %s", summary)
}

// Broadcasts while a node is paused (SIGSTOP): a receipt is acked only
// when every device got the push; while the pause outlasts the deadline it
// is partial and names the paused node.
func TestFaultBroadcastNodePaused(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	c.addDevices(10, nil)
	c.waitRegistered(30)
	total := len(c.devs)
	broadcast := func(timeout time.Duration) (appsdk.Receipt, int64) {
		seq := c.book.seq.Add(1)
		data := fmt.Appendf(nil, `{"seq":%d}`, seq)
		r, err := c.app.PushAll(context.Background(), data, appsdk.WithTimeout(timeout))
		if err != nil {
			t.Fatalf("broadcast: %v", err)
		}
		return r, seq
	}
	seenBy := func(seq int64) int {
		c.book.mu.Lock()
		defer c.book.mu.Unlock()
		return len(c.book.seenBy[seq])
	}
	// Every node is known to hold devices before the faults.
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if r, _ := broadcast(2 * time.Second); r.Status != appsdk.StatusAcked || r.Acked != total {
			return fmt.Errorf("broadcast %s, %d acks", r.Status, r.Acked)
		}
		return nil
	})
	counts := map[appsdk.Status]int{}
	check := func(r appsdk.Receipt, seq int64) {
		t.Helper()
		counts[r.Status]++
		switch r.Status {
		case appsdk.StatusAcked:
			if r.Acked != total || len(r.Missing) > 0 {
				t.Errorf("broadcast %d acked with %d acks, missing %v", seq, r.Acked, r.Missing)
			}
			// Acks come from devices that handled the push first.
			if n := seenBy(seq); n != total {
				t.Errorf("broadcast %d acked, but %d of %d devices got it", seq, n, total)
			}
		case appsdk.StatusPartial, appsdk.StatusTimeout:
			if len(r.Missing) == 0 && r.Acked == total {
				t.Errorf("broadcast %d %s with every ack and nobody missing", seq, r.Status)
			}
		default:
			t.Errorf("broadcast %d: %s", seq, r.Status)
		}
	}
	// Short pauses (150ms) within a 2s deadline: the receipt waits for the
	// paused node.
	var resumed sync.WaitGroup
	for i := range 20 {
		if i%4 == 1 {
			c.signal("node-2", syscall.SIGSTOP)
			resumed.Add(1)
			go func() {
				defer resumed.Done()
				time.Sleep(150 * time.Millisecond) // the length of the pause
				c.signal("node-2", syscall.SIGCONT)
			}()
		}
		check(broadcast(2 * time.Second))
	}
	resumed.Wait() // no SIGCONT of a short pause may end the long one
	// A pause longer than the deadline: partial, naming node-2.
	c.signal("node-2", syscall.SIGSTOP)
	r, seq := broadcast(500 * time.Millisecond)
	c.signal("node-2", syscall.SIGCONT)
	check(r, seq)
	if r.Status != appsdk.StatusPartial || len(r.Missing) != 1 || r.Missing[0] != "node-2" || r.Acked != total-10 {
		t.Errorf("broadcast with node-2 paused past the deadline: %s, %d acks, missing %v", r.Status, r.Acked, r.Missing)
	}
	t.Logf("broadcasts with node-2 paused: %v", counts)
}
