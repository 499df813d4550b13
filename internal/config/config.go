// Package config loads tether's YAML configuration file: one file maps
// straight onto each component's own Config struct. Decoding is strict (an
// unknown key is an error) and Validate's errors name the offending key.
//
// ${NAME} in a value is replaced by the environment variable NAME (a
// missing variable is an error), so secrets need not be written in the file.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tetherhq/tether/balancer"
	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/bus/natsserver"
	"github.com/tetherhq/tether/directory"
	"github.com/tetherhq/tether/node"
	"github.com/tetherhq/tether/store"
	"github.com/tetherhq/tether/token"
)

// File is the whole configuration file. Each section is optional; a
// command uses the sections it needs.
type File struct {
	// NATS says how to reach NATS.
	NATS bus.Config `yaml:"nats"`
	// Services holds each service's token keys and registration secret.
	Services map[string]Service `yaml:"services"`
	// Node configures `tether node`.
	Node node.Config `yaml:"node"`
	// Directory configures `tether directory`.
	Directory directory.Config `yaml:"directory"`
	// Balancer configures `tether balancer` (and the balancer of
	// `tether dev`).
	Balancer balancer.Config `yaml:"balancer"`
	// Store selects the shared store: Redis when store.redis is set,
	// otherwise in-process memory (single binary only).
	Store Store `yaml:"store"`
	// NATSServer configures the NATS server that `tether nats` and
	// `tether dev` embed (only its system_account for `tether dev`, which
	// picks its own addresses).
	NATSServer natsserver.Config `yaml:"nats_server"`
	// Seed is applied to the store at start by `tether dev` and by
	// `tether directory --seed`: services, tiers, nodes, assignments and
	// clients.
	Seed *store.Seed `yaml:"seed"`
}

// Service is one service's secrets.
type Service struct {
	// Keys sign and verify the service's device tokens; the first one signs.
	Keys []token.Key `yaml:"keys"`
	// RegistrationSecret lets holders obtain device tokens from the
	// directory's negotiate endpoint. Optional.
	RegistrationSecret string `yaml:"registration_secret"`
}

// Store is the store section.
type Store struct {
	// Redis, when its url or addrs is set, selects the Redis store.
	Redis *store.RedisConfig `yaml:"redis"`
}

//go:embed dev.yaml
var devYAML []byte

// Dev returns the built-in configuration `tether dev` runs with, which
// `tether token` and `tether push` also default to.
func Dev() (*File, error) {
	return Parse(devYAML, "built-in dev configuration")
}

// DevYAML returns the text of the built-in dev configuration.
func DevYAML() []byte { return slices.Clone(devYAML) }

// Load reads and parses a configuration file.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(b, path)
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// Parse parses configuration text; name is used in errors.
//
// ${NAME} is replaced inside the parsed values, not in the text: a
// reference in a comment needs no variable, and a value is taken as is,
// whatever YAML syntax it holds ('#', ': ', a leading '*', a newline).
func Parse(b []byte, name string) (*File, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	var f File
	if doc.Kind == 0 {
		return &f, nil // empty, or only comments
	}
	var missing []string
	expandEnv(&doc, &missing)
	if len(missing) > 0 {
		return nil, fmt.Errorf("config %s: environment variables not set: %v", name, missing)
	}
	// yaml.Node.Decode cannot refuse unknown keys: find them by decoding
	// the text strictly, keeping only those errors (a "${PORT}" that is no
	// int yet fails there too, and is checked below once replaced).
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var te *yaml.TypeError
	if err := dec.Decode(&File{}); errors.As(err, &te) {
		var unknown []string
		for _, e := range te.Errors {
			if strings.Contains(e, " not found in type ") {
				unknown = append(unknown, e)
			}
		}
		if len(unknown) > 0 {
			return nil, fmt.Errorf("config %s: %w", name, &yaml.TypeError{Errors: unknown})
		}
	}
	if err := doc.Decode(&f); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	return &f, nil
}

// expandEnv replaces ${NAME} in every scalar under n by the environment
// variable NAME, and appends the names of unset ones to missing.
func expandEnv(n *yaml.Node, missing *[]string) {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		v := envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			k := m[2 : len(m)-1]
			v, ok := os.LookupEnv(k)
			if !ok && !slices.Contains(*missing, k) {
				*missing = append(*missing, k)
			}
			return v
		})
		if v != n.Value && n.Style == 0 {
			// A plain scalar: resolve its type from the value, as if it had
			// been written in the file ("port: ${PORT}" is an int).
			n.Tag = ""
		}
		n.Value = v
	}
	for _, c := range n.Content {
		expandEnv(c, missing)
	}
}

// Keyring builds the token keyring of every service.
func (f *File) Keyring() (*token.Keyring, error) {
	m := make(map[string][]token.Key, len(f.Services))
	for name, s := range f.Services {
		m[name] = s.Keys
	}
	return token.NewKeyring(m)
}

// RegistrationSecrets returns the services' registration secrets.
func (f *File) RegistrationSecrets() map[string]string {
	m := map[string]string{}
	for name, s := range f.Services {
		if s.RegistrationSecret != "" {
			m[name] = s.RegistrationSecret
		}
	}
	return m
}

// ValidateCommon checks the sections every command uses. The seed is
// checked where it is applied: `tether dev` fills in its nodes' URLs first.
func (f *File) ValidateCommon() error {
	var errs []error
	if err := f.NATS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := f.NATSServer.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := f.Keyring(); err != nil {
		errs = append(errs, err)
	}
	if f.Store.Redis != nil {
		if err := f.Store.Redis.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
