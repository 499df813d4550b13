package protocol_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tetherhq/tether/protocol"
)

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want error
	}{
		{"vacuum", nil},
		{"vac-001", nil},
		{"A_z:0@9", nil},
		{"-", nil},
		{strings.Repeat("x", protocol.MaxNameLen), nil},
		{"", protocol.ErrEmptyName},
		{strings.Repeat("x", protocol.MaxNameLen+1), protocol.ErrNameTooLong},
		{"a.b", protocol.ErrBadName},
		{"*", protocol.ErrBadName},
		{">", protocol.ErrBadName},
		{"a b", protocol.ErrBadName},
		{"a\tb", protocol.ErrBadName},
		{"a\x00", protocol.ErrBadName},
		{"été", protocol.ErrBadName},
		{"a/b", protocol.ErrBadName},
		{"$SYS", protocol.ErrBadName},
	} {
		err := protocol.ValidName(tc.name)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("ValidName(%q) = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestValidConnIDAndConnNode(t *testing.T) {
	for _, tc := range []struct {
		id   string
		ok   bool
		node string
	}{
		{"node-1.k2x9f0a7", true, "node-1"},
		{"n1.A0", true, "n1"},
		{"n1." + strings.Repeat("a", protocol.MaxNameLen), true, "n1"},
		{"n1." + strings.Repeat("a", protocol.MaxNameLen+1), false, "n1"},
		{"n1", false, "n1"},
		{"n1.", false, "n1"},
		{".abc", false, ""},
		{"n1.a.b", false, "n1"},
		{"n1.a-b", false, "n1"},
		{"n1.*", false, "n1"},
		{"n1.>", false, "n1"},
		{"n 1.abc", false, "n 1"},
		{"", false, ""},
	} {
		err := protocol.ValidConnID(tc.id)
		if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, protocol.ErrBadConnID) {
			t.Errorf("ValidConnID(%q) = %v, want ok %v", tc.id, err, tc.ok)
		}
		if got := protocol.ConnNode(tc.id); got != tc.node {
			t.Errorf("ConnNode(%q) = %q, want %q", tc.id, got, tc.node)
		}
	}
}
