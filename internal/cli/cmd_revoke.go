package cli

import (
	"fmt"
	"time"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/directory"
)

// revoke runs `tether admin revoke`.
func (a *adminCmd) revoke(args []string) error {
	fs := a.flags("revoke")
	service := fs.String("service", "", "")
	device := fs.String("device", "", "")
	tokenID := fs.String("token-id", "", "")
	tok := fs.String("token", "", "")
	notBefore := fs.String("not-before", "", "")
	until := fs.String("until", "", "")
	if _, err := a.parse(fs, args, 0, "flags only"); err != nil {
		return err
	}
	spec := directory.RevokeSpec{Service: *service, Device: *device, TokenID: *tokenID, Token: *tok}
	switch {
	case *tok != "" && (*device != "" || *tokenID != ""):
		return a.usage("revoke: --token alone, or --device, or --token-id")
	case *tok == "" && *service == "":
		return a.usage("revoke: --service is required with --device or --token-id")
	case *tok == "" && (*device == "") == (*tokenID == ""):
		return a.usage("revoke: give --device or --token-id (or --token)")
	}
	for _, f := range []struct {
		name, v string
		t       *time.Time
	}{{"not-before", *notBefore, &spec.NotBefore}, {"until", *until, &spec.Until}} {
		if f.v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, f.v)
		if err != nil {
			return a.usage("revoke: --%s: want an RFC 3339 time such as 2026-11-26T07:00:00Z: %v", f.name, err)
		}
		*f.t = t
	}
	r, err := a.c.Revoke(a.ctx, spec)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	if a.json {
		return a.printJSON(r)
	}
	_, err = fmt.Fprintf(a.stdout, "revoked %s (until %s)\n", describeRevocation(r), r.Until.Format(time.RFC3339))
	return err
}

// revocations runs `tether admin revocations`.
func (a *adminCmd) revocations(args []string) error {
	if _, err := a.parse(a.flags("revocations"), args, 0, "no arguments"); err != nil {
		return err
	}
	rs, err := a.c.Revocations(a.ctx)
	if err != nil {
		return fmt.Errorf("revocations: %w", err)
	}
	if a.json {
		return a.printJSON(directory.RevocationList{Revocations: rs})
	}
	rows := make([][]string, 0, len(rs))
	for _, r := range rs {
		what, nb := "token "+r.TokenID, "-"
		if r.Device != "" {
			what, nb = "device "+r.Device, r.NotBefore.Format(time.RFC3339)
		}
		rows = append(rows, []string{r.Service, what, nb, r.Until.Format(time.RFC3339)})
	}
	return a.table("SERVICE\tREVOKED\tNOT_BEFORE\tUNTIL", rows)
}

func describeRevocation(r bus.Revocation) string {
	if r.Device != "" {
		return fmt.Sprintf("device %s of %s, tokens issued before %s", r.Device, r.Service, r.NotBefore.Format(time.RFC3339))
	}
	return fmt.Sprintf("token %s of %s", r.TokenID, r.Service)
}
