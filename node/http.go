package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"
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
	mux.HandleFunc("GET /metrics", n.handleMetrics)
	mux.HandleFunc("GET /healthz", n.handleHealth)
	if n.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	n.httpLn = ln
	n.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
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

func (n *Node) handleMetrics(w http.ResponseWriter, _ *http.Request) {
	st := n.Stats()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	p := func(name, typ, help string, v any) {
		fmt.Fprintf(w, "# HELP tether_node_%s %s\n# TYPE tether_node_%s %s\ntether_node_%s %v\n", name, help, name, typ, name, v)
	}
	p("connections", "gauge", "Authenticated connections.", st.Connections)
	p("accepted_total", "counter", "TCP connections accepted.", st.Accepted)
	p("authenticated_total", "counter", "Connections authenticated.", st.Authenticated)
	p("auth_failed_total", "counter", "Authentications refused (bad, expired or forbidden tokens).", st.AuthFailed)
	p("auth_timeouts_total", "counter", "Connections closed for not authenticating in time.", st.AuthTimeouts)
	p("closed_total", "counter", "Authenticated connections closed.", st.Closed)
	p("ping_timeouts_total", "counter", "Connections closed as dead peers.", st.PingTimeouts)
	p("slow_consumers_total", "counter", "Connections dropped as slow consumers.", st.SlowConsumers)
	p("replaced_total", "counter", "Connections closed by a newer connection of the same device.", st.Replaced)
	p("bad_frames_total", "counter", "Malformed or unexpected frames from devices.", st.BadFrames)
	p("pushes_total", "counter", "Push requests handled.", st.Pushes)
	p("deliveries_total", "counter", "Push frames written to connections.", st.Deliveries)
	p("acked_total", "counter", "Pushes acked by every connection they reached.", st.Acked)
	p("ack_timeouts_total", "counter", "Pushes whose acks did not all come in time.", st.AckTimeouts)
	p("rejected_total", "counter", "Pushes and control messages refused (too large, bad request).", st.Rejected)
	p("upstream_total", "counter", "Upstream messages published.", st.Upstream)
	p("upstream_failed_total", "counter", "Upstream messages NATS did not take (the device got an unavailable error).", st.UpstreamFailed)
	p("unknown_acks_total", "counter", "Acks for no push pending on their connection.", st.UnknownAcks)
	p("late_acks_total", "counter", "Acks that came after their push's ack timeout.", st.LateAcks)
	p("too_big_total", "counter", "Frames from devices over max_frame_bytes.", st.TooBig)
	p("upgrade_failed_total", "counter", "WebSocket handshakes that failed (bad request, wrong path, timeout).", st.UpgradeFailed)
	p("bad_control_total", "counter", "Node-to-node control messages refused (no valid signature).", st.BadControl)
	p("pending_pushes", "gauge", "Pushes awaiting acks.", st.Pending)
	p("subscriptions", "gauge", "Device, group and service subscriptions held.", st.Subscriptions)
	p("dropped_total", "counter", "Pushes NATS dropped for the node because its queues were full (checked every stats interval).", st.Dropped)
	p("goroutines", "gauge", "Goroutines of the process.", runtime.NumGoroutine())
	nats := 0
	if n.nc.IsConnected() {
		nats = 1
	}
	p("nats_connected", "gauge", "1 while connected to NATS.", nats)
}
