package node

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Load is the one load figure of tether: the share of the host's CPUs that
// the node process used over the last loadWindow, from 0 (idle) to 1 (every
// CPU busy with this process). It is sampled in one place (loadMeter) and
// reported unchanged in the registry's heartbeats, in the stats events
// (`cpu`), to the directory's ranking and to the balancer.
func (n *Node) Load() float64 { return n.load.value() }

// loadWindow is how often the load is sampled; the figure covers the last
// window.
const loadWindow = time.Second

// loadMeter samples the process's CPU time. sample is called by the stats
// loop every loadWindow; value may be called from anywhere.
type loadMeter struct {
	bits atomic.Uint64 // math.Float64bits of the last figure

	mu     sync.Mutex
	lastAt time.Time
	lastCP time.Duration
}

func (m *loadMeter) value() float64 { return math.Float64frombits(m.bits.Load()) }

// sample takes a sample at now and updates the figure.
func (m *loadMeter) sample(now time.Time) {
	cpu := cpuTime()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.lastAt.IsZero() {
		if wall := now.Sub(m.lastAt); wall > 0 {
			v := (cpu - m.lastCP).Seconds() / wall.Seconds() / float64(runtime.NumCPU())
			m.bits.Store(math.Float64bits(min(max(v, 0), 1)))
		}
	}
	m.lastAt, m.lastCP = now, cpu
}

// cpuTime is the CPU time the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
