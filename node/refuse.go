package node

import (
	"sync"
	"time"
)

// refuseLogPerSecond is the most refused connections logged per second;
// the others are counted, and the next line logged says how many were not.
const refuseLogPerSecond = 10

// logSampler lets through at most refuseLogPerSecond lines a second.
type logSampler struct {
	mu         sync.Mutex
	second     int64
	logged     int
	suppressed int
}

// allow reports whether a line may be logged now, and how many were
// suppressed since the last one that was.
func (s *logSampler) allow(now time.Time) (ok bool, suppressed int) {
	sec := now.Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec != s.second {
		s.second, s.logged = sec, 0
	}
	if s.logged >= refuseLogPerSecond {
		s.suppressed++
		return false, 0
	}
	s.logged++
	suppressed, s.suppressed = s.suppressed, 0
	return true, suppressed
}

// refused counts a connection closed before it was authenticated, and
// logs it (sampled) with its reason and remote address. Neither the token
// nor the request line is logged: they may hold secrets.
func (n *Node) refused(c *conn) {
	i := refuseIndex(c.closeReason)
	if i < 0 {
		return // gone by itself, or shut down: not refused
	}
	n.metrics.refused[i].Add(1)
	ok, suppressed := n.refuseLog.allow(time.Now())
	if !ok {
		return
	}
	args := []any{"reason", c.closeReason, "remote", c.nc.RemoteAddr().String()}
	if c.service != "" {
		args = append(args, "service", c.service)
	}
	if suppressed > 0 {
		args = append(args, "not_logged_before", suppressed)
	}
	n.log.Info("device connection refused", args...)
}
