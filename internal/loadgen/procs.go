package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Group starts child processes and stops them.
type Group struct {
	// Command returns the command that runs `tether args...`. Default:
	// this executable (os.Executable) with args.
	Command func(args ...string) *exec.Cmd
	// Logs, when set, receives every line the children write, prefixed
	// with the child's name. Whatever it is, each child keeps its last
	// lines (Child.Tail).
	Logs io.Writer
	// OnExit, when set, is called (on its own goroutine) when a child exits
	// without having been asked to stop (Child.Stop, Child.Signal with
	// expected set), with an error holding its last lines.
	OnExit func(c *Child, err error)

	mu       sync.Mutex
	children []*Child
}

// Spec describes a child to start.
type Spec struct {
	// Name names the child in logs and errors ("nats", "node-2").
	Name string
	// Args are the tether arguments (Group.Command builds the command), or,
	// with Path set, the program's arguments.
	Args []string
	// Path, when set, runs this program instead of tether (redis-server).
	Path string
	// Env is added to the child's environment.
	Env []string
	// Stdout, when set, wraps the writer of the child's standard output,
	// given its log tail (which otherwise takes both stdout and stderr):
	// see FirstLine.
	Stdout func(logs io.Writer) io.Writer
	// Setup, when set, is called with the command just before it starts,
	// to take pipes (cmd.StdinPipe) or set anything else; it must leave
	// Stderr alone, and Stdout when Stdout or a pipe of its own is not
	// wanted.
	Setup func(cmd *exec.Cmd) error
}

// Child is one running (or exited) process of a Group.
type Child struct {
	// Name and PID identify the child.
	Name string
	PID  int

	logs     *tailWriter
	done     chan struct{} // closed when the process has exited
	err      error         // how it exited; set before done is closed
	stopping atomic.Bool   // set before the group stops it on purpose
}

// Start starts the child described by s.
func (g *Group) Start(s Spec) (*Child, error) {
	var cmd *exec.Cmd
	switch {
	case s.Path != "":
		cmd = exec.Command(s.Path, s.Args...)
	case g.Command != nil:
		cmd = g.Command(s.Args...)
	default:
		cmd = SelfCommand(s.Args...)
	}
	if len(s.Env) > 0 {
		if cmd.Env == nil {
			cmd.Env = os.Environ()
		}
		cmd.Env = append(cmd.Env, s.Env...)
	}
	setChildAttrs(cmd)
	c := &Child{Name: s.Name, logs: newTailWriter(s.Name, 40, g.Logs), done: make(chan struct{})}
	cmd.Stderr = c.logs
	cmd.Stdout = c.logs
	if s.Stdout != nil {
		cmd.Stdout = s.Stdout(c.logs)
	}
	if s.Setup != nil {
		if err := s.Setup(cmd); err != nil {
			return nil, fmt.Errorf("loadgen: start %s: %w", s.Name, err)
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("loadgen: start %s: %w", s.Name, err)
	}
	c.PID = cmd.Process.Pid
	g.mu.Lock()
	g.children = append(g.children, c)
	g.mu.Unlock()
	go func() {
		c.err = cmd.Wait()
		close(c.done)
		if !c.stopping.Load() && g.OnExit != nil {
			g.OnExit(c, fmt.Errorf("%s (pid %d) exited unexpectedly (%v)%s", c.Name, c.PID, c.err, c.Tail()))
		}
	}()
	return c, nil
}

// Children returns every child started so far, in order.
func (g *Group) Children() []*Child {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*Child(nil), g.children...)
}

// StopAll stops every child still running, the last started first, each
// within grace.
func (g *Group) StopAll(grace time.Duration) {
	cs := g.Children()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i].Stop(grace)
	}
}

// Done is closed when the process has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Exited reports whether the process has exited.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Err is how the process exited (nil before it has).
func (c *Child) Err() error {
	if !c.Exited() {
		return nil
	}
	return c.err
}

// Expect marks the child's exit as expected: the group's OnExit will not
// be called for it.
func (c *Child) Expect() { c.stopping.Store(true) }

// Signal sends sig to the child's process group; with expected, the exit
// it may cause is not reported to OnExit.
func (c *Child) Signal(sig syscall.Signal, expected bool) error {
	if expected {
		c.Expect()
	}
	if c.Exited() {
		return errors.New("loadgen: " + c.Name + " has exited")
	}
	return signalGroup(c.PID, sig)
}

// Stop asks the child to stop (SIGTERM to its group), waits up to grace,
// then kills the group.
func (c *Child) Stop(grace time.Duration) {
	c.stopping.Store(true)
	if c.Exited() {
		return
	}
	_ = signalGroup(c.PID, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
		return
	case <-t.C:
	}
	_ = signalGroup(c.PID, syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
	}
}

// Tail returns the child's last lines, indented, for an error message (""
// when it wrote nothing).
func (c *Child) Tail() string { return c.logs.tail() }

// SelfCommand returns a command running this executable with args.
func SelfCommand(args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	return exec.Command(exe, args...)
}

// tailWriter splits a child's output into lines, keeps the last n and
// forwards each, prefixed with the child's name, to an optional writer.
type tailWriter struct {
	name    string
	forward io.Writer

	mu    sync.Mutex
	part  []byte
	lines []string
	n     int
}

func newTailWriter(name string, n int, forward io.Writer) *tailWriter {
	return &tailWriter{name: name, n: n, forward: forward}
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.part = append(t.part, p...)
	for {
		i := bytes.IndexByte(t.part, '\n')
		if i < 0 {
			break
		}
		t.addLocked(string(t.part[:i]))
		t.part = t.part[i+1:]
	}
	if len(t.part) > 64<<10 { // a runaway line: keep it anyway
		t.addLocked(string(t.part))
		t.part = nil
	}
	return len(p), nil
}

// addLocked keeps one line. t.mu held.
func (t *tailWriter) addLocked(line string) {
	if len(t.lines) == t.n {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:t.n-1]
	}
	t.lines = append(t.lines, line)
	if t.forward != nil {
		fmt.Fprintf(t.forward, "[%s] %s\n", t.name, line)
	}
}

func (t *tailWriter) tail() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if len(t.part) > 0 {
		lines = append(lines[:len(lines):len(lines)], string(t.part))
	}
	if len(lines) == 0 {
		return ""
	}
	return "; its last output:\n    " + strings.Join(lines, "\n    ")
}

// FirstLine is a writer that hands its first line to a channel and the
// rest to the next writer: a Spec.Stdout for children that print where
// they listen on their first line (`tether nats`).
type FirstLine struct {
	mu   sync.Mutex
	buf  []byte
	got  bool
	ch   chan string
	next io.Writer
}

// NewFirstLine returns a FirstLine writing after its first line to next.
func NewFirstLine(next io.Writer) *FirstLine {
	return &FirstLine{ch: make(chan string, 1), next: next}
}

// Line receives the first line, trimmed, once it is complete.
func (f *FirstLine) Line() <-chan string { return f.ch }

func (f *FirstLine) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.got {
		return f.next.Write(p)
	}
	f.buf = append(f.buf, p...)
	i := bytes.IndexByte(f.buf, '\n')
	if i < 0 {
		return len(p), nil
	}
	f.got = true
	f.ch <- strings.TrimSpace(string(f.buf[:i]))
	if rest := f.buf[i+1:]; len(rest) > 0 {
		_, _ = f.next.Write(rest)
	}
	f.buf = nil
	return len(p), nil
}
