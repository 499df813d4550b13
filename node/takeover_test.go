package node_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/internal/testenv"
	"github.com/tetherhq/tether/internal/testutil"
	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/token"
)

// Two connections of one device that authenticate in the same instant, on
// two nodes or on one: whatever the interleaving, exactly one stays open
// and the other is replaced (4005). Raced hundreds of times.
func TestConcurrentAuthenticationsLeaveOne(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	n2 := e.StartNode(testenv.FastConfig("n2"))
	const rounds = 300
	for round := range rounds {
		dev := fmt.Sprintf("race-%d", round)
		tok := e.Token("vacuum", dev, token.IssueOptions{Groups: []string{"g1"}})
		// Two nodes in even rounds, one node in odd ones.
		urls := []string{n1.URL(), n2.URL()}
		if round%2 == 1 {
			urls[1] = n1.URL()
		}
		var devs [2]*simulator.Device
		for i := range devs {
			d, err := simulator.NewDevice(simulator.DeviceConfig{
				Service: "vacuum", Token: tok, Nodes: []string{urls[i]}, AuthInFrame: round%3 == 0,
				MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			devs[i] = d
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var mu sync.Mutex
		results := map[int]error{}
		start := make(chan struct{})
		for i, d := range devs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				err := d.Run(ctx)
				mu.Lock()
				results[i] = err
				mu.Unlock()
			}()
		}
		close(start)
		testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			replaced, connected := 0, 0
			for i, d := range devs {
				if errors.Is(results[i], simulator.ErrReplaced) {
					replaced++
				} else if _, ok := d.Welcome(); ok {
					connected++
				}
			}
			if replaced != 1 || connected != 1 {
				return fmt.Errorf("round %d: %d replaced, %d connected: want one of each", round, replaced, connected)
			}
			return nil
		})
		cancel()
		wg.Wait()
	}
	// Every survivor was told apart by the tie-break, not by luck: the
	// replaced counters saw every round.
	if got := n1.Stats().Replaced + n2.Stats().Replaced; got < rounds {
		t.Fatalf("%d replacements in %d rounds", got, rounds)
	}
}

// An attempt that the device gave up on, authenticated late (its auth
// frame arrives after the device is connected elsewhere), is the older
// connection: it gives way, and the live one stays.
func TestLateAttemptDoesNotTakeOver(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	n2 := e.StartNode(testenv.FastConfig("n2"))
	tok := e.Token("vacuum", "late", token.IssueOptions{})
	// The first attempt: its socket is open on n1, its auth not sent yet.
	stale := dialRaw(t, n1.URL(), nil)
	// The device, meanwhile connected through n2.
	live, w := e.Device(simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{n2.URL()}}, "late")
	// The stale attempt's auth arrives now.
	stale.send(ws.OpText, []byte(`{"type":"auth","token":"`+tok+`"}`))
	f, code := stale.next()
	for code == 0 && (f.Type == protocol.TypeWelcome || f.Type == protocol.TypeError) {
		f, code = stale.next()
	}
	if code != protocol.CloseReplaced {
		t.Fatalf("stale attempt: frame %+v, close %d; want close %d", f, code, protocol.CloseReplaced)
	}
	if now, ok := live.Welcome(); !ok || now.Conn != w.Conn {
		t.Fatalf("the live connection %s was replaced (now %+v, connected %v)", w.Conn, now, ok)
	}
	r, err := request(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`1`), nil)
	if err != nil || r.Status != bus.StatusAcked {
		t.Fatalf("push to the live connection: %+v, %v", r, err)
	}
}
