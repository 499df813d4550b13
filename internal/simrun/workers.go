package simrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/tetherhq/tether/internal/loadgen"
)

// workerConn is the simulator's end of one worker: its commands, its
// latest report, and its process (nil for a worker in this process).
type workerConn struct {
	index       int
	first, n    int
	proc        *loadgen.Child
	cmd         *lineWriter
	closeIn     func() error // ends the worker's commands
	readerDone  chan struct{}
	inProcDone  chan error // the in-process worker's RunWorker result
	ready       chan error // receives the setup's outcome once
	readyOnce   sync.Once
	onReport    func(*workerConn, *report)
	mu          sync.Mutex
	last        report // latest cumulative figures
	final       bool   // the final report came
	flushWaits  map[uint64]chan report
	lastEventAt map[int]int64
}

// split returns the first device index and the device count of each of n
// workers sharing total devices, as evenly as possible.
func split(total, n int) (first, count []int) {
	at := 0
	for i := range n {
		k := total / n
		if i < total%n {
			k++
		}
		first, count = append(first, at), append(count, k)
		at += k
	}
	return first, count
}

// startWorkerProc starts worker i as a `tether simulate-worker` process.
func startWorkerProc(procs *loadgen.Group, i int, logLevel string, onReport func(*workerConn, *report)) (*workerConn, error) {
	var stdin io.WriteCloser
	var stdout io.ReadCloser
	p, err := procs.Start(loadgen.Spec{
		Name: "worker-" + strconv.Itoa(i),
		Args: []string{"simulate-worker", "--log-level", logLevel},
		Setup: func(cmd *exec.Cmd) error {
			var err error
			if stdin, err = cmd.StdinPipe(); err != nil {
				return err
			}
			cmd.Stdout = nil
			stdout, err = cmd.StdoutPipe()
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	w := newWorkerConn(i, stdin, stdin.Close, onReport)
	w.proc = p
	go w.read(stdout)
	return w, nil
}

// startWorkerInProc runs worker i in this process, on pipes.
func startWorkerInProc(ctx context.Context, i int, onReport func(*workerConn, *report)) *workerConn {
	cmdR, cmdW := io.Pipe()
	repR, repW := io.Pipe()
	w := newWorkerConn(i, cmdW, cmdW.Close, onReport)
	w.inProcDone = make(chan error, 1)
	go func() {
		err := RunWorker(ctx, cmdR, repW, nil)
		_ = repW.Close()
		_ = cmdR.Close()
		w.inProcDone <- err
	}()
	go w.read(repR)
	return w
}

func newWorkerConn(i int, cmd io.Writer, closeIn func() error, onReport func(*workerConn, *report)) *workerConn {
	return &workerConn{
		index: i, cmd: newLineWriter(cmd), closeIn: closeIn, readerDone: make(chan struct{}),
		ready: make(chan error, 1), onReport: onReport, flushWaits: map[uint64]chan report{}, lastEventAt: map[int]int64{},
	}
}

// read reads the worker's reports until its output ends.
func (w *workerConn) read(r io.Reader) {
	defer close(w.readerDone)
	lr := newLineReader(r)
	for {
		var rep report
		if err := lr.read(&rep); err != nil {
			w.readyOnce.Do(func() { w.ready <- fmt.Errorf("worker %d ended before it was ready: %v", w.index, err) })
			return
		}
		switch rep.Kind {
		case repError:
			w.readyOnce.Do(func() { w.ready <- fmt.Errorf("worker %d: %s", w.index, rep.Error) })
			continue
		case repReady:
			w.readyOnce.Do(func() { w.ready <- nil })
		}
		w.mu.Lock()
		w.last = rep
		if rep.Kind == repFinal {
			w.final = true
		}
		ch := w.flushWaits[rep.Req]
		if rep.Kind == repFlush {
			delete(w.flushWaits, rep.Req)
		}
		w.mu.Unlock()
		if w.onReport != nil {
			w.onReport(w, &rep)
		}
		if rep.Kind == repFlush && ch != nil {
			ch <- rep
		}
	}
}

// send writes a command to the worker.
func (w *workerConn) send(c command) error {
	if err := w.cmd.write(c); err != nil {
		return fmt.Errorf("worker %d: %w", w.index, err)
	}
	return nil
}

// flush asks for a report and waits for it (at most limit).
func (w *workerConn) flush(req uint64, limit time.Duration) (report, error) {
	ch := make(chan report, 1)
	w.mu.Lock()
	w.flushWaits[req] = ch
	w.mu.Unlock()
	if err := w.send(command{Op: opFlush, Req: req}); err != nil {
		return report{}, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-w.readerDone:
		return report{}, fmt.Errorf("worker %d has ended", w.index)
	case <-time.After(limit):
		return report{}, fmt.Errorf("worker %d did not answer within %v", w.index, limit)
	}
}

// latest returns the worker's latest report.
func (w *workerConn) latest() report {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// stop tells the worker to stop, waits for its final report and its end.
func (w *workerConn) stop(limit time.Duration) error {
	if w.proc != nil {
		w.proc.Expect() // it ends once it has sent its final report
	}
	_ = w.send(command{Op: opStop})
	var err error
	select {
	case <-w.readerDone:
	case <-time.After(limit):
		err = fmt.Errorf("worker %d did not stop within %v", w.index, limit)
	}
	_ = w.closeIn()
	if w.proc != nil {
		w.proc.Stop(5 * time.Second)
	}
	if w.inProcDone != nil {
		select {
		case e := <-w.inProcDone:
			if e != nil && err == nil && !errors.Is(e, context.Canceled) {
				err = e
			}
		case <-time.After(limit):
		}
	}
	return err
}
