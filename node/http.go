package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// startHTTP serves /metrics (Prometheus text format), /healthz and, with
// Config.Pprof, /debug/pprof/ on Config.MetricsListen.
func (n *Node) startHTTP() error {
	if n.cfg.MetricsListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", n.cfg.MetricsListen)
	if err != nil {
		return fmt.Errorf("node: metrics listen %s: %w", n.cfg.MetricsListen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", n.handleHealth)
	if n.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	n.httpLn = ln
	// Bounded like every tether HTTP listener: a 16 KiB request head (431
	// beyond), read within 5s; idle keep-alives closed after a minute.
	// No write timeout: a CPU profile takes its time.
	n.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	n.spawn(func() {
		if err := n.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Warn("metrics server stopped", "err", err)
		}
	})
	return nil
}

// MetricsAddr returns the address of the metrics listener, or nil.
func (n *Node) MetricsAddr() net.Addr {
	if n.httpLn == nil {
		return nil
	}
	return n.httpLn.Addr()
}

func (n *Node) stopHTTP() {
	if n.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = n.httpSrv.Shutdown(ctx)
	}
}

func (n *Node) handleHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	status, code := "ok", http.StatusOK
	switch {
	case n.draining.Load():
		status, code = "draining", http.StatusServiceUnavailable
	case !n.nc.IsConnected():
		status, code = "nats_disconnected", http.StatusServiceUnavailable
	}
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"status":%q,"node":%q,"connections":%d}`+"\n", status, n.cfg.ID, n.hub.count())
}

// Registry returns the registry the node's metrics are in.
func (n *Node) Registry() *prometheus.Registry { return n.reg }
