package telemetry

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/tetherhq/tether/bus"
)

// ServiceNamePrefix starts the NATS micro service name of every tether
// process: "tether-node", "tether-directory", "tether-balancer",
// "tether-simulator".
const ServiceNamePrefix = "tether-"

// Service describes a tether process to NATS's service discovery.
type Service struct {
	// Kind is the process kind: "node", "directory", "balancer",
	// "simulator". The micro service is named "tether-<kind>". Required.
	Kind string
	// ID is the process's own ID (node ID, balancer ID...). Required.
	ID string
	// Description is shown by `nats micro info`.
	Description string
	// Metadata is added to the service's metadata (which always holds
	// "id" and "kind"), for example the metrics URL.
	Metadata map[string]string
	// Stats returns the process's live figures, as JSON-encodable data:
	// the answer of the "stats" endpoint and the data of `nats micro
	// stats`. Required.
	Stats func() any
	// Info returns the process's settings, as JSON-encodable data: the
	// answer of the "info" endpoint. Optional (the metadata, without).
	Info func() any
}

// IDToken turns a process ID into a valid subject token: characters other
// than letters, digits, '-', '_', ':' and '@' become '_'.
func IDToken(id string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == ':', r == '@':
			return r
		}
		return '_'
	}, id)
}

// AddService registers the process as a NATS micro service on nc, with two
// endpoints, "stats" and "info", on subj.Ops(kind, id, ...). Stop the
// returned service (or close nc) to unregister.
func AddService(nc *nats.Conn, subj bus.Subjects, s Service) (micro.Service, error) {
	if s.Kind == "" || s.ID == "" || s.Stats == nil {
		return nil, errors.New("telemetry: Service needs Kind, ID and Stats")
	}
	md := maps.Clone(s.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	md["id"], md["kind"] = s.ID, s.Kind
	info := s.Info
	if info == nil {
		info = func() any { return md }
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:               ServiceNamePrefix + s.Kind,
		Version:            Version(),
		Description:        s.Description,
		Metadata:           md,
		QueueGroupDisabled: true,
		StatsHandler: func(e *micro.Endpoint) any {
			if e.Name == "stats" {
				return s.Stats()
			}
			return nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("telemetry: micro service: %w", err)
	}
	id := IDToken(s.ID)
	for name, f := range map[string]func() any{"stats": s.Stats, "info": info} {
		err := svc.AddEndpoint(name, micro.HandlerFunc(func(r micro.Request) {
			b, err := json.Marshal(f())
			if err != nil {
				_ = r.Error("500", err.Error(), nil)
				return
			}
			_ = r.Respond(b)
		}), micro.WithEndpointSubject(subj.Ops(s.Kind, id, name)))
		if err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("telemetry: micro endpoint %s: %w", name, err)
		}
	}
	return svc, nil
}
