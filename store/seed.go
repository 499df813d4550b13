package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/tetherhq/tether/protocol"
)

// Seed is a starting state for a store, read from YAML by LoadSeed or
// ParseSeed:
//
//	nodes:
//	  - id: n1
//	    url: ws://10.0.0.1:18080/ws
//	    state: active          # default active
//	    class: high-spec       # optional
//	    capacity: 20000        # optional; 0 = no limit
//	services:
//	  vacuum:
//	    default_tier: free     # default "free"
//	    tiers:
//	      free: [n1]
//	      paid: [n1, n2]
//	clients:
//	  - id: dev-42
//	    service: vacuum
//	    tier: paid             # optional
type Seed struct {
	Nodes    []SeedNode             `yaml:"nodes"`
	Services map[string]SeedService `yaml:"services"`
	Clients  []SeedClient           `yaml:"clients"`
}

// SeedNode is a node of a Seed.
type SeedNode struct {
	ID  string `yaml:"id"`
	URL string `yaml:"url"`
	// State defaults to StateActive.
	State    NodeState `yaml:"state"`
	Class    string    `yaml:"class"`
	Capacity int       `yaml:"capacity"`
}

// SeedService is a service of a Seed.
type SeedService struct {
	// DefaultTier defaults to DefaultTier.
	DefaultTier string `yaml:"default_tier"`
	// Tiers maps each tier to the IDs of its nodes, which the seed's nodes
	// must declare.
	Tiers map[string][]string `yaml:"tiers"`
}

// SeedClient is a client mapping of a Seed.
type SeedClient struct {
	ID      string `yaml:"id"`
	Service string `yaml:"service"`
	Tier    string `yaml:"tier"`
}

// LoadSeed reads and validates a seed file, as ParseSeed does.
func LoadSeed(path string) (Seed, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Seed{}, fmt.Errorf("seed: %w", err)
	}
	s, err := parseSeed(data)
	if err != nil {
		return Seed{}, fmt.Errorf("seed %s: %w", path, err)
	}
	return s, nil
}

// ParseSeed decodes one YAML document strictly (an unknown key is an error)
// and validates the seed.
func ParseSeed(data []byte) (Seed, error) {
	s, err := parseSeed(data)
	if err != nil {
		return Seed{}, fmt.Errorf("seed: %w", err)
	}
	return s, nil
}

func parseSeed(data []byte) (Seed, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var s Seed
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return Seed{}, errors.New("empty")
		}
		return Seed{}, err
	}
	if err := dec.Decode(new(yaml.Node)); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("more than one YAML document")
		}
		return Seed{}, err
	}
	return s, s.Validate()
}

// Validate checks the seed; each error names its key, such as
// `services.vacuum.tiers.paid[1]: unknown node "n9"`.
func (s Seed) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	name := func(key, v string) bool {
		if err := protocol.ValidName(v); err != nil {
			bad(key, "%v", err)
			return false
		}
		return true
	}

	nodes := map[string]bool{}
	for i, n := range s.Nodes {
		key := fmt.Sprintf("nodes[%d]", i)
		if name(key+".id", n.ID) && nodes[n.ID] {
			bad(key+".id", "duplicate node %q", n.ID)
		}
		nodes[n.ID] = true
		if err := checkURL(n.URL); err != nil {
			bad(key+".url", "%v", err)
		}
		if n.State != "" && !n.State.Valid() {
			bad(key+".state", "unknown state %q (active, standby, draining or sleep)", n.State)
		}
		if len(n.Class) > maxClass {
			bad(key+".class", "longer than %d bytes", maxClass)
		}
		if n.Capacity < 0 {
			bad(key+".capacity", "negative (%d)", n.Capacity)
		}
	}

	for _, svc := range slices.Sorted(maps.Keys(s.Services)) {
		sv, key := s.Services[svc], "services."+svc
		name(key, svc)
		if sv.DefaultTier != "" {
			name(key+".default_tier", sv.DefaultTier)
		}
		for _, tier := range slices.Sorted(maps.Keys(sv.Tiers)) {
			tkey := key + ".tiers." + tier
			name(tkey, tier)
			seen := map[string]bool{}
			for i, n := range sv.Tiers[tier] {
				switch {
				case !nodes[n]:
					bad(fmt.Sprintf("%s[%d]", tkey, i), "unknown node %q", n)
				case seen[n]:
					bad(fmt.Sprintf("%s[%d]", tkey, i), "node %q listed twice", n)
				}
				seen[n] = true
			}
		}
	}

	clients := map[string]bool{}
	for i, c := range s.Clients {
		key := fmt.Sprintf("clients[%d]", i)
		if name(key+".id", c.ID) && clients[c.ID] {
			bad(key+".id", "duplicate client %q", c.ID)
		}
		clients[c.ID] = true
		sv, ok := s.Services[c.Service]
		if !ok {
			bad(key+".service", "unknown service %q", c.Service)
			continue
		}
		if _, ok := sv.Tiers[c.Tier]; c.Tier != "" && !ok && c.Tier != sv.defaultTier() {
			bad(key+".tier", "service %q has no tier %q", c.Service, c.Tier)
		}
	}
	return errors.Join(errs...)
}

func (sv SeedService) defaultTier() string {
	if sv.DefaultTier == "" {
		return DefaultTier
	}
	return sv.DefaultTier
}

// Apply validates the seed and writes it to st: it creates or updates every
// node, service and client the seed names, and sets each seeded tier to
// exactly the seed's nodes. It removes nothing the seed does not name, and
// applying the same seed twice changes nothing the second time.
func (s Seed) Apply(ctx context.Context, st Store) error {
	if err := s.Validate(); err != nil {
		return err
	}
	for _, n := range s.Nodes {
		state := n.State
		if state == "" {
			state = StateActive
		}
		err := st.PutNode(ctx, Node{ID: n.ID, URL: n.URL, State: state, Class: n.Class, Capacity: n.Capacity})
		if err != nil {
			return fmt.Errorf("seed: node %s: %w", n.ID, err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.Services)) {
		sv := s.Services[name]
		tiers := slices.Sorted(maps.Keys(sv.Tiers))
		if err := st.PutService(ctx, name, sv.DefaultTier, tiers); err != nil {
			return fmt.Errorf("seed: service %s: %w", name, err)
		}
		for _, tier := range tiers {
			if _, err := st.SetAssignment(ctx, name, tier, sv.Tiers[tier], 0); err != nil {
				return fmt.Errorf("seed: service %s tier %s: %w", name, tier, err)
			}
		}
	}
	for _, c := range s.Clients {
		if err := st.PutClient(ctx, Client(c)); err != nil {
			return fmt.Errorf("seed: client %s: %w", c.ID, err)
		}
	}
	return nil
}
