package console_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/devcluster"
	"github.com/tetherhq/tether/internal/testutil"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/token"
)

// chromium returns the path of the Chromium binary, failing the test when
// there is none (.ci/run installs Debian's).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	t.Fatal("Chromium not found: install Debian's chromium (.ci/run does)")
	return ""
}

// browser starts a headless Chromium with a fresh profile and returns a
// tab's context; both end with the test.
func browser(t *testing.T, width, height int) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// The first Run starts the browser, on a context without a timeout
	// (a timeout there would stop the browser).
	if _, err := chromedp.Run(ctx, chromedp.Title()); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// text evaluates a JavaScript expression in the page and returns its value
// as a string.
func text(ctx context.Context, js string) (string, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[string](js))
}

// The live cluster page, in a real browser against a real dev cluster,
// shows every node, and its connection counts follow devices as they
// connect; it loads nothing from elsewhere and fits a phone's width.
func TestPageInChromium(t *testing.T) {
	cfg, err := config.Dev()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := devcluster.Start(ctx, devcluster.Options{Config: cfg, Nodes: 5, Devices: -1, MetricsPort: -1, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c.Stop(ctx)
	})
	url := c.Directory.URL() + "/ui/"

	tab := browser(t, 1280, 900)
	tctx, cancelRun := context.WithTimeout(tab, 90*time.Second)
	defer cancelRun()
	if err := chromedp.Do(tctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`#nodes tbody tr[data-node="node-5"]`))); err != nil {
		t.Fatalf("the page did not show node-5: %v", err)
	}
	for i := 1; i <= 5; i++ {
		sel := fmt.Sprintf(`document.querySelectorAll('#nodes tr[data-node="node-%d"]').length`, i)
		if k, err := chromedp.Run(tctx, chromedp.Evaluate[int](sel)); err != nil || k != 1 {
			t.Fatalf("node-%d: %d rows, %v", i, k, err)
		}
	}
	total := func() (int, error) {
		s, err := text(tctx, `document.querySelector('#total-connections b').textContent`)
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(s))
	}
	if k, err := total(); err != nil || k != 0 {
		t.Fatalf("connections before any device: %d, %v", k, err)
	}

	// Devices connect: the page's counts follow, by live events.
	kr, err := cfg.Keyring()
	if err != nil {
		t.Fatal(err)
	}
	const devices = 24
	f, err := simulator.NewFleet(simulator.FleetConfig{
		Devices: devices, Services: []string{"vacuum", "aircon", "tv"}, DirectoryURL: c.Directory.URL(), ClientIDs: true,
		Token: func(_ context.Context, service, device string) (string, error) {
			return kr.Issue(service, device, token.IssueOptions{Tier: "free"})
		},
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	fctx, stopFleet := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(fctx)
	}()
	defer func() {
		stopFleet()
		<-done
	}()
	var seen []int
	testutil.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		k, err := total()
		if err != nil {
			return err
		}
		if len(seen) == 0 || seen[len(seen)-1] != k {
			seen = append(seen, k)
		}
		if k != devices {
			return fmt.Errorf("the page shows %d connections, want %d (seen %v)", k, devices, seen)
		}
		return nil
	})
	// The rows agree: every vacuum device is in the vacuum row.
	if s, err := text(tctx, `document.querySelector('#services tr[data-service="vacuum"] td[data-field="connections"]').textContent`); err != nil || s != strconv.Itoa(devices/3) {
		t.Errorf("vacuum row shows %q connections, want %d (%v)", s, devices/3, err)
	}
	nodeSum, err := chromedp.Run(tctx, chromedp.Evaluate[int](`[...document.querySelectorAll('#nodes td[data-field="connections"]')].reduce((a, td) => a + (parseInt(td.textContent) || 0), 0)`))
	if err != nil || nodeSum != devices {
		t.Errorf("the node rows add up to %d connections, want %d (%v)", nodeSum, devices, err)
	}
	// Nothing but the directory's own assets was loaded.
	foreign, err := chromedp.Run(tctx, chromedp.Evaluate[[]string](`performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin))`))
	if err != nil || len(foreign) > 0 {
		t.Errorf("the page loaded from elsewhere: %v (%v)", foreign, err)
	}
	if path := os.Getenv("TETHER_CONSOLE_SCREENSHOT"); path != "" {
		if err := chromedp.Do(tctx, chromedp.Sleep(2500*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// On a phone: no sideways scrolling of the page itself (wide tables
	// scroll inside their own box).
	phone := browser(t, 390, 844)
	pctx, cancelPhone := context.WithTimeout(phone, 60*time.Second)
	defer cancelPhone()
	if err := chromedp.Do(pctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`#nodes tbody tr[data-node="node-5"]`))); err != nil {
		t.Fatal(err)
	}
	overflow, err := chromedp.Run(pctx, chromedp.Evaluate[int](`window.innerWidth > 400 ? 9999 : document.documentElement.scrollWidth - window.innerWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow > 0 {
		t.Errorf("on a 390px-wide screen the page is %dpx too wide", overflow)
	}
	if path := os.Getenv("TETHER_CONSOLE_SCREENSHOT_PHONE"); path != "" {
		png, err := chromedp.Run(pctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		_ = os.WriteFile(path, png, 0o644)
	}
}
