// Package testutil holds the small helpers every test package shares. It
// imports nothing of tether, so that any package's tests may use it.
package testutil

import (
	"testing"
	"time"
)

// CheckFor calls f every `every` until it returns nil, and fails the test
// with f's last error once total has passed. It is the way to wait for a
// condition that no event announces: never a bare sleep.
func CheckFor(t testing.TB, total, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", total, err)
		}
		time.Sleep(every)
	}
}
