// Package simrun runs `tether simulate`: a Scenario (YAML, strict, with
// defaults applied in one place and errors naming their keys) against a
// cluster, and returns a simreport.Report.
//
// Run starts what the run needs and stops all of it before it returns: the
// local cluster when no cluster is given (tether nats, redis-server, tether
// directory, tether node and tether balancer as child processes, see
// cluster.go), the workers that hold the devices (RunWorker, in this
// process or as `tether simulate-worker` processes, talking over pipes: see
// proto.go), and the app side, which pushes with appsdk and accounts for
// every receipt (app.go). Timed events run on their own goroutine
// (events.go); a display shows the run on a terminal (status.go).
//
// Measurements: the workers report every second their cumulative counters
// and, as deltas, HDR histograms (connect time, push to device), the pushes
// their devices saw (by sequence number) and their connections per second;
// the simulator merges them with the app side's receipts into the loss
// check, the timeline and the report.
//
// Run is not safe to call twice at once with the same Options; RunWorker
// is called once per worker.
package simrun
