// Package simulator simulates home appliances for development and load
// tests. Device is a reusable Go device client: it asks the directory for
// the node list, tries the nodes in order with backoff and jitter,
// authenticates, acks pushes (at once, or later with Ack), sends upstream
// messages and reconnects when told to, when the socket drops, or when the
// node has been silent for twice the welcome's ping_ms.
//
// Fleet runs many of them: either Devices spread over Services, or Kinds of
// appliances with their profiles (service, paid share, groups, upstream
// pace, session length, how they answer pushes). A fleet of Kinds may be
// split over processes (First, Count): every choice it makes for a device
// depends on the device's index and the Seed only (see Unit), so that the
// parts together behave as one. Cut cuts the power of some devices for a
// while; Gate paces every connection attempt.
//
// A Device is safe for concurrent use: Send, Ack, Close and Leave may be
// called from any goroutine while Run runs. Handlers (OnPush, Watch and the
// On... callbacks) run on the device's reader goroutine and must not block
// for long. A Fleet's methods are safe for concurrent use.
package simulator
