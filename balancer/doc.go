// Package balancer is tether's monitoring server (the patent's 800): it
// follows every node's stats on NATS, keeps a sliding window of them, and
// round after round applies its policies (connections per node and the 2×
// rule, push rate, bytes, load, tiers, standby) to move services between
// nodes, wake standby nodes and put idle ones to sleep. It writes the map
// with a fenced compare-and-set (only the leader, holding the store's
// lease, can write), publishes every decision on tether.balancer.decisions,
// and moves devices by asking nodes to drain them at a set rate.
//
// The planning is a pure function of the map, the stats window and the
// clock (planner), so that its tests run fast and deterministic.
// docs/balancer.md describes every policy, its keys and defaults.
//
// A Balancer is safe for concurrent use; its loops belong to it and end
// with Shutdown.
package balancer
