package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/directory"
	"github.com/tetherhq/tether/store"
)

const adminToken = "admin-token-for-tests"

// adminIO is an IO whose environment is env and whose dev state file is
// absent.
func adminIO(out, errOut io.Writer, env map[string]string) IO {
	return IO{Stdout: out, Stderr: errOut, Getenv: func(k string) string {
		if k == "TETHER_DEV_STATE" {
			return filepath.Join(os.TempDir(), "tether-no-dev-state.json")
		}
		return env[k]
	}}
}

// startAdminDir starts a directory with the admin API on st and returns its URL.
func startAdminDir(t *testing.T, st store.Store) string {
	t.Helper()
	d, err := directory.New(directory.Config{Listen: "127.0.0.1:0", AdminToken: adminToken, HeartbeatInterval: 30 * time.Second, RefreshInterval: 10 * time.Second},
		directory.Deps{Store: st, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Shutdown(context.Background()) })
	return d.URL()
}

func nodeURL(id string) string { return "ws://" + id + ".example:18080/ws" }

func urls(ids ...string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = nodeURL(id)
	}
	return out
}

type lookupAnswer struct {
	Status int
	Body   string
	URLs   []string
}

func getLookup(t *testing.T, base, query string) (struct{}, lookupAnswer) {
	t.Helper()
	resp, err := http.Get(base + "/v1/nodes?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	a := lookupAnswer{Status: resp.StatusCode, Body: b.String()}
	var l struct {
		HandshakeURL []string `json:"handshakeUrl"`
	}
	_ = json.Unmarshal(b.Bytes(), &l)
	a.URLs = l.HandshakeURL
	return struct{}{}, a
}

func lookupIs(t *testing.T, base, query string, want ...string) func() error {
	return func() error {
		_, a := getLookup(t, base, query)
		got := slices.Clone(a.URLs)
		slices.Sort(got)
		w := slices.Clone(want)
		slices.Sort(w)
		if a.Status != 200 || !slices.Equal(got, w) {
			return fmt.Errorf("%s: %d %s, want %v", query, a.Status, a.Body, want)
		}
		return nil
	}
}

// adminCmd runs `tether admin` and returns its stdout.
func adminCmdOut(t *testing.T, base string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	all := append([]string{"--url", base, "--token", adminToken}, args...)
	err := runAdmin(context.Background(), adminIO(&out, &errOut, nil), all)
	if err != nil && !errors.Is(err, errUsage) && errOut.Len() > 0 {
		t.Logf("stderr: %s", errOut.String())
	}
	if errors.Is(err, errUsage) && !strings.Contains(errOut.String(), "usage: tether admin") {
		t.Errorf("usage error without usage: %q", errOut.String())
	}
	return out.String(), err
}

// rows parses a table printed by AdminCommand into its rows' fields,
// header first.
func rows(s string) [][]string {
	var out [][]string
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		out = append(out, strings.Fields(line))
	}
	return out
}

func TestAdminCommand(t *testing.T) {
	st := store.NewMemory()
	base := startAdminDir(t, st)
	ok := func(args ...string) string {
		t.Helper()
		out, err := adminCmdOut(t, base, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out
	}
	if out := ok("services", "add", "vacuum", "--default-tier", "free", "--tiers", "paid,free"); !strings.Contains(out, "ok (map version") {
		t.Errorf("services add: %q", out)
	}
	ok("nodes", "add", "n1", "--url", nodeURL("n1"), "--class", "high-spec", "--capacity", "500")
	ok("nodes", "add", "n2", "--url", nodeURL("n2"), "--state", "standby")
	ok("assign", "vacuum", "paid", "n1")
	ok("assign", "vacuum", "free", "n2")
	ok("clients", "add", "dev-1", "--service", "vacuum", "--tier", "paid")
	ok("clients", "add", "--service", "vacuum", "dev-2")
	if err := st.Heartbeat(t.Context(), "n1", store.Load{Connections: 7}, time.Now()); err != nil {
		t.Fatal(err)
	}

	// Tables.
	r := rows(ok("services"))
	if len(r) != 2 || r[0][0] != "NAME" || r[1][0] != "vacuum" || r[1][1] != "free" || r[1][2] != "free=n2" || r[1][3] != "paid=n1" {
		t.Errorf("services: %q", r)
	}
	r = rows(ok("nodes", "list"))
	if len(r) != 3 || r[1][0] != "n1" || r[1][1] != "active" || r[1][2] != "yes" || r[1][4] != "7" || r[1][5] != "500" || r[1][6] != "high-spec" ||
		r[2][0] != "n2" || r[2][1] != "standby" || r[2][2] != "no" {
		t.Errorf("nodes: %q", r)
	}
	r = rows(ok("clients"))
	if len(r) != 3 || strings.Join(r[1], " ") != "dev-1 vacuum paid" || strings.Join(r[2], " ") != "dev-2 vacuum -" {
		t.Errorf("clients: %q", r)
	}
	r = rows(ok("map"))
	if len(r) != 4 || r[0][0] != "map" || r[1][0] != "SERVICE" ||
		strings.Join(r[2][:6], " ") != "vacuum free* n2 standby no 0" ||
		strings.Join(r[3][:6], " ") != "vacuum paid n1 active yes 0" {
		t.Errorf("map: %q", r)
	}

	// JSON.
	var svs []store.Service
	if err := json.Unmarshal([]byte(ok("--json", "services")), &svs); err != nil || len(svs) != 1 || len(svs[0].Tiers["paid"]) != 1 {
		t.Errorf("services --json: %+v %v", svs, err)
	}
	var m directory.AdminMap
	if err := json.Unmarshal([]byte(ok("map", "--json")), &m); err != nil || len(m.Nodes) != 2 {
		t.Errorf("map --json: %+v %v", m, err)
	}
	var ch directory.ChangeAnswer
	if err := json.Unmarshal([]byte(ok("--json", "nodes", "state", "n2", "active")), &ch); err != nil || ch.Version == 0 {
		t.Errorf("nodes state --json: %+v %v", ch, err)
	}
	if err := st.Heartbeat(t.Context(), "n2", store.Load{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	ok("assign", "vacuum", "free", "n1")
	if err := lookupIs(t, base, "service=vacuum", urls("n1", "n2")...)(); err != nil {
		t.Error(err)
	}
	ok("unassign", "vacuum", "free", "n1")
	if err := lookupIs(t, base, "client=dev-2", urls("n2")...)(); err != nil {
		t.Error(err)
	}

	// Seed from a file.
	file := filepath.Join(t.TempDir(), "seed.yaml")
	if err := os.WriteFile(file, []byte("services:\n  tv:\n    tiers:\n      free: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok("seed", file)
	if _, a := getLookup(t, base, "service=tv"); a.Status != 503 {
		t.Errorf("seeded tv: %d %s", a.Status, a.Body)
	}

	// Removals.
	ok("clients", "rm", "dev-1")
	ok("nodes", "rm", "n1")
	ok("services", "rm", "tv")
	r = rows(ok("nodes"))
	if len(r) != 2 || r[1][0] != "n2" {
		t.Errorf("nodes after rm: %q", r)
	}

	// API errors are returned, not usage errors.
	if _, err := adminCmdOut(t, base, "assign", "vacuum", "free", "ghost"); err == nil || errors.Is(err, errUsage) || !directory.IsNotFound(err) {
		t.Errorf("assign unknown node: %v", err)
	}
	var out, errOut bytes.Buffer
	err := runAdmin(t.Context(), adminIO(&out, &errOut, nil), []string{"--url", base, "--token", "wrong", "map"})
	var ae *directory.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Errorf("wrong token: %v", err)
	}
	env := map[string]string{envDirectoryURL: base, envAdminToken: adminToken}
	out.Reset()
	if err := runAdmin(t.Context(), adminIO(&out, &errOut, env), []string{"services"}); err != nil || !strings.Contains(out.String(), "vacuum") {
		t.Errorf("from the environment: %v %q", err, out.String())
	}

	// Usage errors.
	for _, args := range [][]string{
		{}, {"bogus"}, {"services", "add"}, {"services", "add", "a", "b"}, {"services", "frob"},
		{"nodes", "add", "n9"}, {"nodes", "add", "n9", "--url", nodeURL("n9"), "--state", "asleep"},
		{"nodes", "state", "n2"}, {"nodes", "state", "n2", "bogus"}, {"assign", "vacuum", "free"},
		{"clients", "add", "dev-9"}, {"seed"}, {"map", "extra"}, {"--bogus-flag", "map"}, {"nodes", "add", "n9", "--capacity", "x"},
	} {
		if _, err := adminCmdOut(t, base, args...); !errors.Is(err, errUsage) {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
	out.Reset()
	errOut.Reset()
	if err := runAdmin(t.Context(), adminIO(&out, &errOut, nil), []string{"--help"}); err != nil || !strings.Contains(out.String(), "usage:") || errOut.Len() != 0 {
		t.Errorf("--help: %v\nstdout %q\nstderr %q", err, out.String(), errOut.String())
	}
}
