// Package telemetry holds what every tether process shares to be seen by
// its operators: a Prometheus registry with the Go and process collectors
// and tether_build_info, a collector of a NATS connection's figures, the
// registration of a process as a NATS micro service (so that `nats micro
// list` shows the cluster), and the adapters that route go-redis's and
// nats-server's logs into slog.
//
// Everything here is goroutine-safe. Collectors read atomic counters at
// scrape time: nothing is added to the components' hot paths.
package telemetry
