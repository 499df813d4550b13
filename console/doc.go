// Package console is tether's live cluster page: services and the nodes of
// their tier pools with each node's state and class, connections per node,
// service and tier, pushes, acks, offline pushes and timeouts per second
// per service with latency percentiles, the balancer's recent decisions
// with their reasons, and recent disconnect reasons.
//
// It is fed by NATS (the nodes' stats on tether.node.*.stats, the
// balancer's decisions on tether.balancer.decisions) and the store's map,
// and pushes one JSON state a second to the browser with server-sent
// events. Every asset is embedded: the page loads nothing from elsewhere.
// The directory serves it at /ui (internal/process wires it in).
//
// A Console is goroutine-safe. Start subscribes; Shutdown ends the event
// streams and unsubscribes.
package console
