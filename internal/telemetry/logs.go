package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

var (
	redisLogMu sync.Mutex
	redisLog   *slog.Logger
	redisOnce  sync.Once
)

// redisLogger routes go-redis's own log lines (dial failures, pool and
// Sentinel or Cluster state changes) into slog at warn level.
type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	redisLogMu.Lock()
	l := redisLog
	redisLogMu.Unlock()
	if l == nil {
		return
	}
	l.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// RouteRedisLogs sends go-redis's log lines to log (component "redis").
// go-redis has one logger per process: the last call wins.
func RouteRedisLogs(log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	redisLogMu.Lock()
	redisLog = log.With("component", "redis")
	redisLogMu.Unlock()
	redisOnce.Do(func() { redis.SetLogger(redisLogger{}) })
}
