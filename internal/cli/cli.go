// Package cli implements the tether command's subcommands. main stays thin:
// it builds a context cancelled by SIGINT/SIGTERM and calls Main.
package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
)

// IO is where a command reads its environment and writes its output.
type IO struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// Std is the process's own IO.
func Std() IO { return IO{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv} }

type command struct {
	summary string
	run     func(ctx context.Context, io IO, args []string) error
}

var commands = map[string]command{}

func register(name, summary string, run func(ctx context.Context, io IO, args []string) error) {
	commands[name] = command{summary: summary, run: run}
}

// errUsage marks errors already explained by a usage message (exit 2).
var errUsage = errors.New("usage")

// errReported marks failures the command has already printed (exit 1).
var errReported = errors.New("reported")

// Main runs the subcommand named by args[0] and returns the exit code.
func Main(ctx context.Context, args []string, io IO) int {
	if len(args) == 0 {
		usage(io.Stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		usage(io.Stdout)
		return 0
	case "--version", "-version":
		args = append([]string{"version"}, args[1:]...)
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(io.Stderr, "tether: unknown command %q\n\n", args[0])
		usage(io.Stderr)
		return 2
	}
	if err := cmd.run(ctx, io, args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if errors.Is(err, errUsage) {
			return 2
		}
		if errors.Is(err, errReported) {
			return 1
		}
		fmt.Fprintf(io.Stderr, "tether %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "tether: always-on push to home appliances over WebSocket, through NATS.")
	fmt.Fprintln(w, "\nUsage: tether <command> [flags]   (tether <command> -h for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	width := 0
	for _, n := range names {
		width = max(width, len(n))
	}
	for _, n := range names {
		fmt.Fprintf(w, "  %-*s %s\n", width, n, commands[n].summary)
	}
}

// newFlags returns a flag set with the --log-level and --log-json every
// command has (see commandLogger), whose usage goes to fs.Output(): stdout
// when -h or --help asked for it (parse sees to that), stderr after a
// mistake. A command that adds to its usage writes to fs.Output() too.
func newFlags(io IO, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("tether "+name, flag.ContinueOnError)
	fs.SetOutput(&usageOut{stdout: io.Stdout, stderr: io.Stderr})
	fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.Bool("log-json", false, "write logs as JSON, one object per line (default: text)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tether %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// usageOut is a flag set's output: stderr, except while parse holds what
// the flag package prints until it knows whether help was asked for.
type usageOut struct {
	stdout, stderr io.Writer
	held           *bytes.Buffer
}

func (u *usageOut) Write(p []byte) (int, error) {
	if u.held != nil {
		return u.held.Write(p)
	}
	return u.stderr.Write(p)
}

// parse parses flags and rejects stray arguments. -h and --help print the
// usage on stdout and return flag.ErrHelp; a bad flag prints the error and
// the usage on stderr and returns errUsage. It also sets slog's default
// logger from --log-level and --log-json, so that what libraries log
// through it follows them too.
func parse(fs *flag.FlagSet, args []string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		fs.Usage()
		return errUsage
	}
	return nil
}

// parseFlags is parse for commands that take arguments: it leaves them in
// fs.Args().
func parseFlags(fs *flag.FlagSet, args []string) error {
	var err error
	if u, ok := fs.Output().(*usageOut); ok {
		u.held = new(bytes.Buffer)
		err = fs.Parse(args)
		held := u.held
		u.held = nil
		w := u.stderr
		if errors.Is(err, flag.ErrHelp) {
			w = u.stdout
		}
		_, _ = held.WriteTo(w)
	} else {
		err = fs.Parse(args)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.Lookup("log-level") == nil {
		return nil
	}
	l, err := commandLogger(fs)
	if err != nil {
		return err
	}
	slog.SetDefault(l)
	return nil
}

// setLogDefault changes the default of --log-level for one command.
func setLogDefault(fs *flag.FlagSet, level string) {
	f := fs.Lookup("log-level")
	f.DefValue = level
	_ = f.Value.Set(level)
}

// commandLogger builds the logger the command's --log-level and --log-json
// ask for, writing to stderr.
func commandLogger(fs *flag.FlagSet) (*slog.Logger, error) {
	level := fs.Lookup("log-level").Value.String()
	json := fs.Lookup("log-json").Value.String() == "true"
	w := fs.Output()
	if u, ok := w.(*usageOut); ok {
		w = u.stderr
	}
	return logger(w, level, json)
}

// logger builds the process logger at level ("debug", "info", "warn", "error").
func logger(w io.Writer, level string, json bool) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}
