// Package membership makes edge nodes members of a cluster, on top of the
// node's observer surface (node.Observer, Conns, Load, Drain) and the
// shared store: a Member registers its node, heartbeats it with its load,
// records its connections, announces its comings and goings on
// tether.map.changed and answers control requests on the node's control
// subject; a Reaper removes, and announces as lost, the connections of
// nodes that died without a goodbye (every Member runs one, and so does
// every directory).
//
// A Member is safe for concurrent use; its node.Observer methods are
// called on the node's hot paths and only record what changed. A Reaper
// belongs to one loop.
package membership
