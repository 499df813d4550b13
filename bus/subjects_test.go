package bus_test

import (
	"errors"
	"testing"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/protocol"
)

func TestNewSubjects(t *testing.T) {
	for _, tc := range []struct {
		prefix, want string
		ok           bool
	}{
		{"", "tether", true},
		{"tether", "tether", true},
		{"acme.tether", "acme.tether", true},
		{"acme..tether", "", false},
		{".tether", "", false},
		{"tether.", "", false},
		{"teth er", "", false},
		{"*", "", false},
		{"tether.>", "", false},
	} {
		s, err := bus.NewSubjects(tc.prefix)
		if tc.ok != (err == nil) || s.Prefix() != tc.want {
			t.Errorf("NewSubjects(%q) = %q, %v; want %q, ok %v", tc.prefix, s.Prefix(), err, tc.want, tc.ok)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("MustSubjects(bad) did not panic")
			}
		}()
		bus.MustSubjects("a b")
	}()
}

// TestSubjects pins the subject layout of docs/subjects.md.
func TestSubjects(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		got    func(bus.Subjects) string
		want   string
	}{
		{"", func(s bus.Subjects) string { return s.Conn("vacuum", "node-1.k2x9f0a7") }, "tether.svc.vacuum.conn.node-1.k2x9f0a7"},
		{"", func(s bus.Subjects) string { return s.Device("vacuum", "vac-001") }, "tether.svc.vacuum.dev.vac-001"},
		{"", func(s bus.Subjects) string { return s.Group("vacuum", "floor-2") }, "tether.svc.vacuum.grp.floor-2"},
		{"", func(s bus.Subjects) string { return s.All("vacuum") }, "tether.svc.vacuum.all"},
		{"", func(s bus.Subjects) string { return s.Upstream("vacuum") }, "tether.svc.vacuum.up"},
		{"", func(s bus.Subjects) string { return s.Events("vacuum") }, "tether.svc.vacuum.events"},
		{"", func(s bus.Subjects) string { return s.AllEvents() }, "tether.svc.*.events"},
		{"", func(s bus.Subjects) string { return s.NodeConns("node-1") }, "tether.svc.*.conn.node-1.*"},
		{"", func(s bus.Subjects) string { return s.NodeStats("node-1") }, "tether.node.node-1.stats"},
		{"", func(s bus.Subjects) string { return s.AllNodeStats() }, "tether.node.*.stats"},
		{"", func(s bus.Subjects) string { return s.NodeCtl("node-1") }, "tether.node.node-1.ctl"},
		{"", func(s bus.Subjects) string { return s.MapChanged() }, "tether.map.changed"},
		{"", func(s bus.Subjects) string { return s.BalancerDecisions() }, "tether.balancer.decisions"},
		{"acme.t", func(s bus.Subjects) string { return s.Device("tv", "tv-1") }, "acme.t.svc.tv.dev.tv-1"},
		{"acme.t", func(s bus.Subjects) string { return s.NodeConns("n1") }, "acme.t.svc.*.conn.n1.*"},
	} {
		if got := tc.got(bus.MustSubjects(tc.prefix)); got != tc.want {
			t.Errorf("prefix %q: got %q, want %q", tc.prefix, got, tc.want)
		}
	}
}

func TestParsePush(t *testing.T) {
	s := bus.MustSubjects("")
	for _, tc := range []struct {
		subject string
		want    bus.Target // zero Kind: not a push subject
	}{
		{"tether.svc.vacuum.conn.node-1.k2x9f0a7", bus.Target{Kind: bus.TargetConn, Service: "vacuum", Key: "node-1.k2x9f0a7"}},
		{"tether.svc.vacuum.dev.vac-001", bus.Target{Kind: bus.TargetDevice, Service: "vacuum", Key: "vac-001"}},
		{"tether.svc.vacuum.grp.floor-2", bus.Target{Kind: bus.TargetGroup, Service: "vacuum", Key: "floor-2"}},
		{"tether.svc.vacuum.all", bus.Target{Kind: bus.TargetAll, Service: "vacuum"}},
		{"tether.svc.vacuum.up", bus.Target{}},
		{"tether.svc.vacuum.events", bus.Target{}},
		{"tether.svc.vacuum", bus.Target{}},
		{"tether.svc..dev.d", bus.Target{}},
		{"tether.node.n1.stats", bus.Target{}},
		{"other.svc.vacuum.all", bus.Target{}},
		{"tetherx.svc.vacuum.all", bus.Target{}},
		{"tether", bus.Target{}},
		{"", bus.Target{}},
		{"tether.svc.vacuum.dev", bus.Target{}},
		{"tether.svc.vacuum.dev.", bus.Target{}},
		{"tether.svc.vacuum.conn.n1", bus.Target{}},
		{"tether.svc.vacuum.conn.n1.a.b", bus.Target{}},
		// Subjects that no builder makes from valid names: a device or group
		// with a dot, wildcards, empty tokens, a trailing dot after "all"
		// (which would have parsed as "tether.svc.vacuum.all").
		{"tether.svc.vacuum.all.", bus.Target{}},
		{"tether.svc.vacuum.all.x", bus.Target{}},
		{"tether.svc.vacuum.dev.a.b", bus.Target{}},
		{"tether.svc.vacuum.grp.a.b", bus.Target{}},
		{"tether.svc.*.dev.d", bus.Target{}},
		{"tether.svc.vacuum.dev.>", bus.Target{}},
		{"tether.svc.vacuum.conn.n1.", bus.Target{}},
		{"tether.svc.vacuum.conn..abc", bus.Target{}},
		{"tether.svc.vacuum.conn.n1.a-b", bus.Target{}},
		{"tether.svc.v%x.conn.n1.abc", bus.Target{}},
	} {
		got, err := s.ParsePush(tc.subject)
		if tc.want.Kind == 0 {
			if !errors.Is(err, bus.ErrNotPush) {
				t.Errorf("ParsePush(%q) = %+v, %v; want ErrNotPush", tc.subject, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParsePush(%q) = %+v, %v; want %+v", tc.subject, got, err, tc.want)
		}
	}

	// A multi-token prefix.
	p := bus.MustSubjects("acme.t")
	if got, err := p.ParsePush("acme.t.svc.tv.grp.living"); err != nil || got != (bus.Target{Kind: bus.TargetGroup, Service: "tv", Key: "living"}) {
		t.Errorf("acme.t: %+v, %v", got, err)
	}
	if _, err := p.ParsePush("acme.svc.tv.all"); !errors.Is(err, bus.ErrNotPush) {
		t.Errorf("acme.t accepted acme.svc.tv.all: %v", err)
	}
}

func TestParsePushDoesNotAllocate(t *testing.T) {
	s := bus.MustSubjects("")
	subjects := []string{
		s.Conn("vacuum", "node-1.k2x9f0a7"), s.Device("vacuum", "vac-1"), s.Group("vacuum", "g"), s.All("vacuum"),
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, subj := range subjects {
			if _, err := s.ParsePush(subj); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run", allocs)
	}
}

func TestTargetKindString(t *testing.T) {
	for k, want := range map[bus.TargetKind]string{
		bus.TargetConn: "conn", bus.TargetDevice: "device", bus.TargetGroup: "group", bus.TargetAll: "all", 0: "unknown", 99: "unknown",
	} {
		if got := k.String(); got != want {
			t.Errorf("TargetKind(%d) = %q, want %q", k, got, want)
		}
	}
}

// rebuild makes the subject of t with the builders.
func rebuild(s bus.Subjects, t bus.Target) string {
	switch t.Kind {
	case bus.TargetConn:
		return s.Conn(t.Service, t.Key)
	case bus.TargetDevice:
		return s.Device(t.Service, t.Key)
	case bus.TargetGroup:
		return s.Group(t.Service, t.Key)
	case bus.TargetAll:
		return s.All(t.Service)
	}
	return "<bad kind>"
}

// FuzzParsePush: ParsePush never panics, and a subject it accepts holds
// only valid names and is exactly the subject its target builds.
func FuzzParsePush(f *testing.F) {
	for _, seed := range []string{
		"tether.svc.vacuum.conn.node-1.k2x9f0a7", "tether.svc.vacuum.dev.vac-001", "tether.svc.vacuum.grp.g",
		"tether.svc.vacuum.all", "tether.svc.vacuum.all.", "tether.svc.vacuum.dev.a.b", "acme.t.svc.tv.all",
		"tether.svc.*.conn.n1.*", "tether.svc.vacuum.conn.n1.", "",
	} {
		f.Add(seed)
	}
	subjects := []bus.Subjects{bus.MustSubjects(""), bus.MustSubjects("acme.t")}
	f.Fuzz(func(t *testing.T, subject string) {
		for _, s := range subjects {
			tgt, err := s.ParsePush(subject)
			if err != nil {
				if !errors.Is(err, bus.ErrNotPush) {
					t.Fatalf("ParsePush(%q): error %v does not wrap ErrNotPush", subject, err)
				}
				continue
			}
			if got := rebuild(s, tgt); got != subject {
				t.Fatalf("ParsePush(%q) = %+v, which builds %q", subject, tgt, got)
			}
			if err := protocol.ValidName(tgt.Service); err != nil {
				t.Fatalf("ParsePush(%q) accepted service %q: %v", subject, tgt.Service, err)
			}
			switch tgt.Kind {
			case bus.TargetConn:
				err = protocol.ValidConnID(tgt.Key)
			case bus.TargetDevice, bus.TargetGroup:
				err = protocol.ValidName(tgt.Key)
			case bus.TargetAll:
				if tgt.Key != "" {
					err = errors.New("key on TargetAll")
				}
			default:
				err = errors.New("bad kind")
			}
			if err != nil {
				t.Fatalf("ParsePush(%q) = %+v: %v", subject, tgt, err)
			}
		}
	})
}
