// Package loadgen holds the process machinery that tether's load tools
// share: `tether bench` and `tether simulate` both start parts of a
// cluster (NATS, nodes, the directory, Redis) and their load workers as
// child processes, stop them in order, keep the last lines each wrote for
// error messages, and read their CPU and memory from /proc.
//
// A Group owns its children: it starts each in its own process group (so
// that a Ctrl-C in the terminal reaches only the orchestrator, which stops
// the children in order), has the kernel kill them if the orchestrator dies
// (Linux), and reports a child that exits without being asked to. Every
// method of Group and Child is safe for concurrent use.
package loadgen
