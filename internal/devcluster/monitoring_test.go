package devcluster_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// monitoringDir holds the Prometheus and Grafana configuration.
var monitoringDir = filepath.Join("..", "..", "configs", "monitoring")

// notFromTether are the metrics the monitoring configuration may use that
// no tether process exports: Prometheus's own up, and nats-surveyor's
// (github.com/nats-io/nats-surveyor, surveyor/collector_statz.go).
var notFromTether = map[string]bool{
	"up": true, "nats_up": true, "nats_core_connection_count": true, "nats_core_subs_count": true,
	"nats_core_recv_msgs_count": true, "nats_core_sent_msgs_count": true, "nats_core_slow_consumer_count": true,
	"nats_core_mem_bytes": true, "nats_core_cpu_percentage": true, "nats_core_route_count": true,
}

var (
	promStrings  = regexp.MustCompile(`"[^"]*"`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`(?:^|[^A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true}
	labelValues  = regexp.MustCompile(`label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)`)
)

// metricNames returns the metric names a PromQL expression selects.
func metricNames(expr string) []string {
	if m := labelValues.FindStringSubmatch(expr); m != nil {
		return []string{m[1]}
	}
	s := promStrings.ReplaceAllString(expr, " ")
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRanges.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	var out []string
	for _, m := range promIdent.FindAllStringSubmatchIndex(s, -1) {
		name := s[m[2]:m[3]]
		rest := strings.TrimLeft(s[m[3]:], " \t\n")
		if promKeywords[name] || strings.HasPrefix(rest, "(") {
			continue // an operator or a function
		}
		out = append(out, name)
	}
	return out
}

func TestMetricNames(t *testing.T) {
	got := metricNames(`sum by (service) (rate(a_total{x="y"}[5m])) / clamp_min(sum by (service) (rate(b_total[5m])), 1e-9) > 0.01 or absent(c)`)
	if strings.Join(got, ",") != "a_total,b_total,c" {
		t.Fatalf("metricNames = %v", got)
	}
}

// checkMonitoring checks the Prometheus and Grafana configuration against
// names, the metric families the running processes export: promtool
// accepts the scrape configuration and the rules, and every expression of
// a rule or a dashboard panel names only exported metrics.
func checkMonitoring(t *testing.T, names map[string]bool) {
	tool := promtool(t)
	for _, args := range [][]string{{"check", "config", filepath.Join(monitoringDir, "prometheus.yml")}, {"check", "rules", filepath.Join(monitoringDir, "rules.yml")}} {
		if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	var exprs []string
	b, err := os.ReadFile(filepath.Join(monitoringDir, "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			exprs = append(exprs, r.Expr)
		}
	}
	for _, a := range []string{"TetherNodeDown", "TetherReconnectStorm", "TetherReceiptTimeouts", "TetherSlowConsumers", "TetherRedisUnreachable", "TetherBalancerWithoutLeader"} {
		if !alerts[a] {
			t.Errorf("rules.yml lacks alert %s", a)
		}
	}
	b, err = os.ReadFile(filepath.Join(monitoringDir, "grafana", "dashboards", "tether.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			rows[strings.Fields(p.Title)[0]] = true
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, r := range []string{"Cluster", "Service", "Node", "NATS"} {
		if !rows[r] {
			t.Errorf("the dashboard has no %s row", r)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	for _, e := range exprs {
		ms := metricNames(e)
		if len(ms) == 0 {
			t.Errorf("no metric in expression %q", e)
		}
		for _, m := range ms {
			base := m
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(m, suf); ok && names[b] {
					base = b
				}
			}
			if !names[base] && !notFromTether[m] {
				t.Errorf("expression %q names %s, which no running process exports", e, m)
			}
		}
	}
}
