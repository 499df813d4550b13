package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
)

func init() {
	register("version", "print the version, commit and Go version of this binary (also --version)", runVersion)
}

// versionInfo is what `tether version` prints, from the binary's build
// information.
type versionInfo struct {
	// Version is the module version: a tag (v1.2.0), a pseudo-version
	// (v0.0.0-20261128093000-154d0a3c2b1e+dirty) or "(devel)".
	Version string `json:"version"`
	// Commit is the VCS revision the binary was built from; empty when the
	// build did not record it (go run, go test, -buildvcs=false).
	Commit string `json:"commit,omitempty"`
	// CommitTime is the commit's time, RFC 3339.
	CommitTime string `json:"commit_time,omitempty"`
	// Modified reports uncommitted changes in the build's work tree.
	Modified bool `json:"modified,omitempty"`
	// Go is the Go version that built the binary.
	Go string `json:"go"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

// buildVersion reads bi (nil: no build information).
func buildVersion(bi *debug.BuildInfo) versionInfo {
	v := versionInfo{Version: "unknown", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		return v
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	goos, goarch := runtime.GOOS, runtime.GOARCH
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		case "GOOS":
			goos = s.Value
		case "GOARCH":
			goarch = s.Value
		}
	}
	v.Platform = goos + "/" + goarch
	return v
}

func (v versionInfo) String() string {
	commit := "commit unknown (built without VCS information: go run, or -buildvcs=false)"
	if v.Commit != "" {
		commit = "commit " + v.Commit
		if v.CommitTime != "" {
			commit += " (" + v.CommitTime + ")"
		}
		if v.Modified {
			commit += " with uncommitted changes"
		}
	}
	return fmt.Sprintf("tether %s\n%s\n%s %s\n", v.Version, commit, v.Go, v.Platform)
}

func runVersion(_ context.Context, io IO, args []string) error {
	fs := newFlags(io, "version", "[--json]")
	asJSON := fs.Bool("json", false, "print one JSON object: version, commit, commit_time, modified, go, platform")
	if err := parse(fs, args); err != nil {
		return err
	}
	bi, _ := debug.ReadBuildInfo()
	v := buildVersion(bi)
	if *asJSON {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		fmt.Fprintln(io.Stdout, string(b))
		return nil
	}
	fmt.Fprint(io.Stdout, v)
	return nil
}
