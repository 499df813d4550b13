package appsdk_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/appsdk"
	"github.com/tetherhq/tether/bus"
)

// startVacuum is the README's Go example ("Pushing from your app"), word
// for word: TestReadmeExample keeps the two the same, and Example_readme
// runs it.
func startVacuum(ctx context.Context, natsURL string) error {
	client, err := appsdk.Connect(ctx, bus.Config{URLs: []string{natsURL}})
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err) // retried for 5s (connect_timeout), or until ctx ends
	}
	defer client.Close()
	vacuum, err := client.Service("vacuum")
	if err != nil {
		return err // not a valid service name
	}
	r, err := vacuum.PushDevice(ctx, "my-vac", []byte(`{"cmd":"start"}`), appsdk.WithTimeout(10*time.Second))
	if err != nil {
		return fmt.Errorf("push: %w", err) // not pushed: ctx ended, or the client was closed
	}
	switch r.Status {
	case appsdk.StatusAcked:
		fmt.Printf("my-vac answered %q\n", r.Result()) // "ok", or the result the device acked with
		return nil
	case appsdk.StatusOffline:
		return errors.New("my-vac is not connected") // to any node, right now
	default: // timeout, partial, closed or rejected: r.Delivered, r.Acked, r.Error say more
		return fmt.Errorf("my-vac did not ack: %s", r.Status)
	}
}

func Example_readme() {
	sb := startSandbox()
	defer sb.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	fmt.Println(startVacuum(ctx, sb.url()))
	sb.device("my-vac", "", nil)
	fmt.Println(startVacuum(ctx, sb.url()))

	// NATS down: an error, not a panic.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	down := "nats://" + l.Addr().String()
	_ = l.Close()
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err = startVacuum(short, down)
	fmt.Println(strings.HasPrefix(fmt.Sprint(err), "connect to NATS: "))
	// Output:
	// my-vac is not connected
	// my-vac answered "ok"
	// <nil>
	// true
}

// TestReadmeExample: the Go code of README.md is startVacuum, so that it
// compiles and Example_readme runs it.
func TestReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile("readme_example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	fn := func(text, where string) string {
		i := strings.Index(text, "\nfunc startVacuum(")
		if i < 0 {
			t.Fatalf("%s has no func startVacuum", where)
		}
		j := strings.Index(text[i:], "\n}\n")
		if j < 0 {
			t.Fatalf("%s: func startVacuum does not end", where)
		}
		return text[i : i+j+3]
	}
	if got, want := fn(string(readme), "README.md"), fn(string(self), "readme_example_test.go"); got != want {
		t.Fatalf("README.md's startVacuum differs from appsdk/readme_example_test.go's:\n%s\nwant\n%s", got, want)
	}
}
