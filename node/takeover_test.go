package node_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testenv"
	"github.com/tetherhq/tether/internal/testutil"
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
