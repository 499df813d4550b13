package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// obj is one decoded manifest (or compose service): nested maps and lists
// as YAML gives them.
type obj map[string]any

// get walks keys (map keys, or list indexes as ints) and returns the
// value there, or nil.
func (o obj) get(keys ...any) any {
	var cur any = map[string]any(o)
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := asMap(cur)
			if !ok {
				return nil
			}
			cur = m[k]
		case int:
			l, ok := cur.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			cur = l[k]
		}
	}
	return cur
}

func (o obj) str(keys ...any) string {
	s, _ := o.get(keys...).(string)
	return s
}

func (o obj) num(keys ...any) int {
	n, _ := o.get(keys...).(int)
	return n
}

func (o obj) list(keys ...any) []any {
	l, _ := o.get(keys...).([]any)
	return l
}

func (o obj) obj(keys ...any) obj {
	m, _ := asMap(o.get(keys...))
	return m
}

func asMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case obj:
		return m, true
	}
	return nil, false
}

// decodeAll decodes every YAML document of b.
func decodeAll(t *testing.T, name string, b []byte) []obj {
	t.Helper()
	var out []obj
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var o obj
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if o != nil {
			out = append(out, o)
		}
	}
}

// natsServerVersion is the nats-server version of go.mod, without its v:
// the version tether embeds (tether nats, tether dev) and tests against.
func natsServerVersion(t *testing.T) string {
	t.Helper()
	f, err := os.Open("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	re := regexp.MustCompile(`^\s*github\.com/nats-io/nats-server/v2 v(\d+\.\d+\.\d+)\s*$`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			return m[1]
		}
	}
	t.Fatal("go.mod does not require github.com/nats-io/nats-server/v2")
	return ""
}

// pinned reports why image is not pinned to a version ("" when it is): a
// digest, or a tag other than latest that names a release (a number).
func pinned(image string) string {
	if strings.Contains(image, "@sha256:") {
		return ""
	}
	name := path.Base(image)
	_, tag, ok := strings.Cut(name, ":")
	switch {
	case !ok:
		return "no tag"
	case tag == "latest":
		return "tag latest"
	case !regexp.MustCompile(`\d+\.\d+`).MatchString(tag):
		return fmt.Sprintf("tag %q names no release (want major.minor at least)", tag)
	}
	return ""
}
