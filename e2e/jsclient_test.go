package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestJSClient runs the whole test suite of the JavaScript client,
// clients/js/test.sh: its unit tests, its integration tests against a real
// `tether dev`, and its device conformance checks in Node and in headless
// Chromium. It fails, rather than skips, when Node.js, npm or Chromium is
// missing (.ci/run installs them). test.sh builds tether with the go
// command on PATH and installs the npm packages (npm ci) when
// clients/js/node_modules is missing.
func TestJSClient(t *testing.T) {
	var missing []string
	for _, tool := range []string{"node", "npm", "bash", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if chromium() == "" {
		missing = append(missing, "chromium")
	}
	if len(missing) > 0 {
		t.Fatalf("the JS client tests need %s: install them (apt-get install -y nodejs npm chromium; .ci/run does) and run again",
			strings.Join(missing, ", "))
	}
	dir, err := filepath.Abs(filepath.Join("..", "clients", "js"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(dir, "test.sh"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CI=true")
	cmd.WaitDelay = 30 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	runErr := cmd.Run()
	text := out.String()
	// The node test runner's summary, and every failure.
	summary := regexp.MustCompile(`(?m)^# (tests|pass|fail|cancelled|skipped) \d+$`).FindAllString(text, -1)
	failures := regexp.MustCompile(`(?m)^not ok \d+ - .*$`).FindAllString(text, -1)
	t.Logf("clients/js/test.sh took %v: %s", time.Since(start).Round(time.Second), strings.Join(summary, ", "))
	if runErr != nil || len(failures) > 0 || !strings.Contains(text, "# fail 0") {
		t.Fatalf("clients/js/test.sh: %v\nfailures:\n%s\n\noutput (tail):\n%s", runErr, strings.Join(failures, "\n"), tail(text, 400))
	}
	if !regexp.MustCompile(`(?m)^# pass [1-9]\d*$`).MatchString(text) {
		t.Fatalf("clients/js/test.sh ran no test:\n%s", tail(text, 100))
	}
}

// chromium returns the Chromium the JS tests will run, or "".
func chromium() string {
	if p := os.Getenv("CHROMIUM_PATH"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
