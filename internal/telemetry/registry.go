package telemetry

import (
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

var (
	buildOnce         sync.Once
	version, revision string
	semver            = regexp.MustCompile(`^v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)$`)
	defaultVersion    = "0.0.0-dev"
	revisionUnknown   = "unknown"
)

func readBuild() {
	buildOnce.Do(func() {
		version, revision = defaultVersion, revisionUnknown
		bi, ok := debug.ReadBuildInfo()
		if !ok {
			return
		}
		if m := semver.FindStringSubmatch(bi.Main.Version); m != nil {
			version = m[1]
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				revision = s.Value
			}
		}
	})
}

// Version is tether's version as a semantic version without the "v": the
// module version the binary was built from, or "0.0.0-dev" for a build of
// a working tree.
func Version() string {
	readBuild()
	return version
}

// Revision is the VCS revision the binary was built from, or "unknown".
func Revision() string {
	readBuild()
	return revision
}

// NewRegistry returns a registry holding the Go runtime and process
// collectors and tether_build_info{component,version,revision,goversion}
// (always 1), for the process part named component ("node", "directory",
// "balancer", "simulator").
func NewRegistry(component string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tether_build_info",
			Help: "Always 1; the labels say which tether build runs, as which component.",
			ConstLabels: prometheus.Labels{
				"component": component, "version": Version(), "revision": Revision(),
				"goversion": strings.TrimPrefix(runtime.Version(), "go"),
			},
		}, func() float64 { return 1 }),
	)
	return reg
}
