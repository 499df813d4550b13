package cli

import (
	"context"
	"errors"
	"fmt"
	goio "io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

func init() {
	register("healthcheck", "GET a /healthz URL: exit 0 on a 2xx answer, 1 otherwise (for images without curl)", runHealthcheck)
}

func runHealthcheck(ctx context.Context, io IO, args []string) error {
	fs := newFlags(io, "healthcheck", "[--timeout 3s] URL")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long (connect, request and answer)")
	// The URL may come before or after the flags.
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 1 || *timeout <= 0 {
		if len(pos) != 1 {
			fmt.Fprintln(io.Stderr, "want exactly one URL, such as http://127.0.0.1:9090/healthz")
		} else {
			fmt.Fprintln(io.Stderr, "--timeout must be positive")
		}
		fs.Usage()
		return errUsage
	}
	u, err := url.Parse(pos[0])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(io.Stderr, "%q is not an http:// or https:// URL\n", pos[0])
		fs.Usage()
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	// Straight to the target: a health check is about that process, not
	// about a proxy that $HTTP_PROXY may name.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%s: no answer within %v", u, *timeout)
		}
		return err
	}
	defer resp.Body.Close()
	body, _ := goio.ReadAll(goio.LimitReader(resp.Body, 1024))
	line := fmt.Sprintf("%s: %s %s", u, resp.Status, strings.TrimSpace(string(body)))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errors.New(line)
	}
	fmt.Fprintln(io.Stdout, line)
	return nil
}
