package directory

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/internal/certs"
	"github.com/tetherhq/tether/membership"
	"github.com/tetherhq/tether/store"
	"github.com/tetherhq/tether/token"
)

// Deps are what a directory needs besides its configuration.
type Deps struct {
	// Store holds the map. Required.
	Store store.Store
	// NATS, when set, is used to hear tether.map.changed (and refresh at
	// once), to announce admin changes on it, and to publish the
	// disconnected events of reaped connections. Optional: without it the
	// directory refreshes every RefreshInterval only.
	NATS *nats.Conn
	// Subjects builds subject names. Default: the default prefix.
	Subjects *bus.Subjects
	// Keys issues and verifies device tokens for /v1/negotiate. Optional:
	// without it negotiate answers 404 negotiate_disabled.
	Keys *token.Keyring
	// Log receives the directory's logs. Default slog.Default().
	Log *slog.Logger
	// Seed, when set, is applied to a store found without services under
	// an epoch the directory has not seen: a new store, or one that lost
	// its data (a Redis restarted empty). One directory at a time applies
	// it (store.LeaseReseed). Optional.
	Seed *store.Seed
	// Registry receives the directory's Prometheus metrics, served on
	// /metrics. Default: a registry of the directory's own.
	Registry *prometheus.Registry
	// UI, when set, is served under /ui (the live cluster page of package
	// console), unless Config.DisableUI. Default: none (404).
	UI http.Handler
}

// Server is a directory: the patent's first auxiliary server 400. It
// answers devices' node lookups from an in-process copy of the map, serves
// negotiate and the admin API, and reaps dead nodes' connections.
type Server struct {
	cfg  Config
	st   store.Store
	nc   *nats.Conn
	subj bus.Subjects
	keys *token.Keyring
	log  *slog.Logger
	ttl  time.Duration // DeadAfter(HeartbeatInterval)
	// freshFor is how long a map read counts as current while the store
	// answers: the refresh interval, plus half of what heartbeat_interval
	// + 1s leaves over it (refresh_interval is shorter than that), so that
	// a node live at the read is still live at read + freshFor.
	freshFor int64

	snap    atomic.Pointer[snapshot]
	health  atomic.Pointer[health]
	clients clientCache
	metrics metrics
	reg     *prometheus.Registry
	ui      http.Handler

	secrets map[string][32]byte // service -> SHA-256 of its registration secret
	// prevSecrets are the registration secrets being rotated out.
	prevSecrets map[string][32]byte
	refresh     map[string]bool // services whose tokens negotiate refreshes
	revoked     *token.Revocations
	lim         *limits
	certs       *certs.Reloader

	handler   http.Handler
	maxAge    []string // Cache-Control of lookups
	retryWait []string // Retry-After of 503s

	refreshMu sync.Mutex    // one refresh at a time
	kick      chan struct{} // asks the refresh loop for a refresh now

	ln        net.Listener
	hs        *http.Server
	url       string
	adminLn   net.Listener
	adminHs   *http.Server
	adminURL  string
	sub       *nats.Subscription
	revokeSub *nats.Subscription
	started   atomic.Bool
	quit      chan struct{}
	// loopCtx is cancelled by Shutdown, ending the loops' store calls.
	loopCtx    context.Context
	loopCancel context.CancelFunc
	wg         sync.WaitGroup
	stop       sync.Once
	stopErr    error

	reaper membership.Reaper // reaper goroutine only

	// Under refreshMu: the store's epoch as last adopted, whether a reset
	// of it was counted already, and the seed to apply to an empty store.
	epoch     string
	resetSeen bool
	// carry holds the heartbeats known before the store lost its data,
	// used until carryUntil (carryBeats).
	carry      map[string]int64
	carryUntil time.Time
	seed       *store.Seed
	holder     string
	reset      atomic.Pointer[resetInfo]
}

// health is the state of the store as the directory last saw it.
type health struct {
	storeOK bool
	loaded  bool      // a map was loaded at least once
	since   time.Time // storeOK false: when the store first failed
	err     string    // storeOK false: the last error
	// After an outage, liveness is judged shift nanoseconds in the past
	// until shiftUntil (see asOf).
	shift, shiftUntil int64
	// Headers sent with every lookup while the store is down.
	staleHdr, sinceHdr, warnHdr []string
}

// New builds a directory. It validates the configuration; Start opens the
// listener and starts the background loops.
func New(cfg Config, d Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	if d.Store == nil {
		return nil, ErrNoStore
	}
	if len(cfg.RegistrationSecrets) > 0 {
		if d.Keys == nil {
			return nil, errors.New("directory.registration_secrets: set, but the directory has no keyring (Deps.Keys) to issue tokens")
		}
		for svc := range cfg.RegistrationSecrets {
			if !d.Keys.HasService(svc) {
				return nil, fmt.Errorf("directory.registration_secrets.%s: the keyring has no key for service %q", svc, svc)
			}
		}
	}
	s := &Server{
		cfg:      cfg,
		st:       d.Store,
		nc:       d.NATS,
		keys:     d.Keys,
		log:      d.Log,
		ttl:      store.DeadAfter(cfg.HeartbeatInterval),
		freshFor: int64(cfg.RefreshInterval + (cfg.HeartbeatInterval+time.Second-cfg.RefreshInterval)/2),
		secrets:  make(map[string][32]byte, len(cfg.RegistrationSecrets)),
		refresh:  make(map[string]bool, len(cfg.RefreshServices)),
		revoked:  token.NewRevocations(),
		lim:      newLimits(cfg),
		kick:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		seed:     d.Seed,
		holder:   newHolder(),
		reg:      d.Registry,
	}
	if !cfg.DisableUI {
		s.ui = d.UI
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	if err := s.reg.Register(newCollector(s)); err != nil {
		return nil, fmt.Errorf("directory: metrics: %w", err)
	}
	s.reset.Store(&resetInfo{})
	s.loopCtx, s.loopCancel = context.WithCancel(context.Background())
	if d.Subjects != nil {
		s.subj = *d.Subjects
	} else {
		s.subj = bus.MustSubjects("")
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "directory")
	s.reaper = membership.Reaper{Store: s.st, NATS: s.nc, Subjects: s.subj, TTL: s.ttl, Log: s.log}
	for svc, secret := range cfg.RegistrationSecrets {
		s.secrets[svc] = sha256.Sum256([]byte(secret))
	}
	s.prevSecrets = make(map[string][32]byte, len(cfg.PreviousRegistrationSecrets))
	for svc, secret := range cfg.PreviousRegistrationSecrets {
		if _, ok := s.secrets[svc]; !ok {
			return nil, fmt.Errorf("directory.previous_registration_secrets.%s: the service has no current registration secret", svc)
		}
		s.prevSecrets[svc] = sha256.Sum256([]byte(secret))
	}
	for _, svc := range cfg.RefreshServices {
		if d.Keys == nil || !d.Keys.HasService(svc) {
			return nil, fmt.Errorf("directory.refresh_services: the keyring has no key for service %q", svc)
		}
		s.refresh[svc] = true
	}
	if cfg.TLS.CertFile != "" {
		var err error
		s.certs, err = certs.New(certs.Files{CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile, NextProtos: []string{"h2", "http/1.1"}}, s.log)
		if err != nil {
			return nil, fmt.Errorf("directory.tls: %w", err)
		}
	}
	s.clients.max = int64(cfg.ClientCacheSize)
	s.clients.ttl = int64(cfg.RefreshInterval)
	if cfg.MaxAge > 0 {
		s.maxAge = []string{"max-age=" + strconv.Itoa(int(cfg.MaxAge/time.Second))}
	} else {
		s.maxAge = []string{"no-cache"}
	}
	s.retryWait = []string{strconv.Itoa(max(1, int((cfg.RefreshInterval+time.Second-1)/time.Second)))}
	s.health.Store(&health{storeOK: true})
	s.handler = s.routes(serveAll)
	return s, nil
}

// Handler returns the directory's HTTP handler, for embedding in another
// server (with Config.Listen "-"). Start must still be called for the
// background loops.
func (s *Server) Handler() http.Handler { return s.handler }

// URL returns the base http:// (or https://) URL of the listener (valid
// after Start; "" without a listener).
func (s *Server) URL() string { return s.url }

// AdminURL returns the base URL of the admin listener (Config.AdminListen;
// valid after Start), or URL when there is none.
func (s *Server) AdminURL() string {
	if s.adminURL != "" {
		return s.adminURL
	}
	return s.url
}

// Start loads the map (once, bounded by StoreTimeout: a store that does
// not answer yet is retried in the background while lookups answer 503
// not_ready), subscribes to map changes, opens the listener and starts the
// refresh and reaper loops. It returns once the listener accepts.
func (s *Server) Start(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return ErrAlreadyStarted
	}
	if s.cfg.Listen != ListenNone {
		ln, err := net.Listen("tcp", s.cfg.Listen)
		if err != nil {
			return fmt.Errorf("directory: listen %s: %w", s.cfg.Listen, err)
		}
		s.ln = ln
		s.url = baseURL(ln.Addr(), s.certs != nil)
	}
	if s.cfg.AdminListen != "" {
		ln, err := net.Listen("tcp", s.cfg.AdminListen)
		if err != nil {
			s.closeListener()
			return fmt.Errorf("directory: listen %s: %w", s.cfg.AdminListen, err)
		}
		s.adminLn = ln
		s.adminURL = baseURL(ln.Addr(), s.certs != nil)
	}
	if err := s.Refresh(ctx); err != nil {
		s.log.Warn("first map load failed; retrying in the background", "err", err)
	}
	if s.nc != nil {
		sub, err := s.nc.Subscribe(s.subj.MapChanged(), func(m *nats.Msg) {
			// Node comings and goings and balancer moves leave client
			// mappings alone; admin changes (and anything unreadable)
			// may have touched them.
			if mc, err := bus.ParseMapChanged(m.Data); err != nil || mc.ClientsMayHaveChanged() {
				s.clients.invalidate(time.Now().UnixNano())
			}
			select {
			case s.kick <- struct{}{}:
			default:
			}
		})
		if err != nil {
			s.closeListener()
			return fmt.Errorf("directory: subscribe %s: %w", s.subj.MapChanged(), err)
		}
		s.sub = sub
		if s.revokeSub, err = s.nc.Subscribe(s.subj.Revocations(), s.onRevocation); err != nil {
			_ = sub.Unsubscribe()
			s.closeListener()
			return fmt.Errorf("directory: subscribe %s: %w", s.subj.Revocations(), err)
		}
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = s.nc.FlushWithContext(fctx)
		cancel()
		if err != nil {
			_ = sub.Unsubscribe()
			_ = s.revokeSub.Unsubscribe()
			s.closeListener()
			return fmt.Errorf("directory: NATS flush: %w", err)
		}
	}
	if err := s.loadRevocations(ctx); err != nil {
		s.log.Warn("loading revocations failed; retrying in the background", "err", err)
	}
	s.goLoop(s.refreshLoop)
	s.goLoop(s.reapLoop)
	s.goLoop(s.revocationLoop)
	if s.ln != nil {
		h := s.handler
		if s.adminLn != nil {
			h = s.routes(servePublic)
		}
		s.hs = s.serve(s.ln, h)
	}
	if s.adminLn != nil {
		s.adminHs = s.serve(s.adminLn, s.routes(serveAdmin))
	}
	s.log.Info("directory started", "url", s.url, "admin_url", s.adminURL, "map_version", s.snapVersion())
	return nil
}

// serve runs an HTTP server for h on ln, with HTTPS when configured. The
// limits bound what one client can make a directory hold: a request head
// of at most 16 KiB (net/http answers 431 beyond), read within 10s, a
// whole request within 30s.
func (s *Server) serve(ln net.Listener, h http.Handler) *http.Server {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.certs != nil {
		hs.TLSConfig = s.certs.Config()
		ln = tls.NewListener(ln, hs.TLSConfig)
	}
	s.goLoop(func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP server failed", "err", err)
		}
	})
	return hs
}

// MaxHeaderBytes bounds the request line and headers of a request to the
// directory (net/http allows 4 KiB on top, and answers 431 beyond).
const MaxHeaderBytes = 16 << 10

func (s *Server) closeListener() {
	if s.ln != nil {
		_ = s.ln.Close()
	}
	if s.adminLn != nil {
		_ = s.adminLn.Close()
	}
}

func baseURL(a net.Addr, tls bool) string {
	host, port, _ := net.SplitHostPort(a.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	if tls {
		return "https://" + net.JoinHostPort(host, port)
	}
	return "http://" + net.JoinHostPort(host, port)
}

func (s *Server) goLoop(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Run starts the directory, serves until ctx ends, then shuts down within
// ten seconds.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Shutdown(sctx)
}

// Shutdown stops accepting requests, lets those in flight finish (bounded
// by ctx) and stops the background loops. It is idempotent. It does not
// close the store or the NATS connection, which belong to the caller.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop.Do(func() {
		if !s.started.Load() {
			return
		}
		close(s.quit)
		s.loopCancel()
		if s.sub != nil {
			_ = s.sub.Unsubscribe()
		}
		if s.revokeSub != nil {
			_ = s.revokeSub.Unsubscribe()
		}
		for _, hs := range []*http.Server{s.hs, s.adminHs} {
			if hs == nil {
				continue
			}
			if err := hs.Shutdown(ctx); err != nil {
				s.stopErr = fmt.Errorf("directory: shutdown: %w", err)
				_ = hs.Close()
			}
		}
		s.wg.Wait()
		s.log.Info("directory stopped")
	})
	return s.stopErr
}

func (s *Server) snapVersion() int64 {
	if sn := s.snap.Load(); sn != nil {
		return sn.version
	}
	return 0
}

// Refresh reloads the map from the store now. On failure the directory
// keeps the map it has, marked stale, and returns the error.
func (s *Server) Refresh(ctx context.Context) error {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	m, err := s.st.Map(sctx)
	now := time.Now()
	if err != nil {
		if ctx.Err() == nil {
			s.markDown(now, err)
		}
		s.metrics.refreshErrors.Add(1)
		return fmt.Errorf("directory: refresh: %w", err)
	}
	if m.Epoch == "" || m.Epoch != s.epoch {
		if am, err := s.adoptEpoch(sctx, m, now); err != nil {
			s.log.Warn("store epoch check failed; serving the map as read", "err", err)
		} else {
			m = am
		}
	}
	s.carryBeats(m, now)
	if old := s.snap.Load(); old != nil && m.Version < old.version {
		s.log.Warn("map version went backwards: the store lost its data or was replaced", "was", old.version, "now", m.Version)
	}
	next := s.recovered(s.snap.Load(), now)
	sn := build(m, now, now.Add(-time.Duration(next.shiftAt(now.UnixNano()))), s.ttl)
	s.snap.Store(sn)
	s.markUp(next)
	s.metrics.refreshes.Add(1)
	return nil
}

func (s *Server) markDown(now time.Time, err error) {
	h := s.health.Load()
	since := now
	if !h.storeOK {
		since = h.since
	} else {
		s.log.Warn("store unavailable; answering from the cached map", "err", err)
	}
	ts := since.UTC().Format(time.RFC3339)
	s.health.Store(&health{
		storeOK:  false,
		loaded:   h.loaded,
		since:    since,
		err:      err.Error(),
		staleHdr: []string{"true"},
		sinceHdr: []string{ts},
		warnHdr:  []string{`110 tether "Response is Stale: store unavailable since ` + ts + `"`},
	})
}

// recovered returns the health after a successful read at now, given the
// previous snapshot: when the map went unread for longer than refreshes
// take (a store outage, known or not), liveness is judged back in time by
// the outage's length for a dead-after period, so that nodes, which could
// not heartbeat meanwhile, get the time they had left before it.
func (s *Server) recovered(prev *snapshot, now time.Time) *health {
	h := s.health.Load()
	next := &health{storeOK: true, loaded: true, shift: h.shift, shiftUntil: h.shiftUntil}
	if prev != nil {
		if unread := now.UnixNano() - prev.readAt; unread > s.freshFor {
			next.shift = now.UnixNano() - prev.liveAt
			next.shiftUntil = now.Add(s.ttl).UnixNano()
		}
	}
	return next
}

// shiftAt is how far back in time liveness is judged at t.
func (h *health) shiftAt(t int64) int64 {
	if t < h.shiftUntil {
		return h.shift
	}
	return 0
}

func (s *Server) markUp(next *health) {
	h := s.health.Load()
	if h.storeOK && h.loaded && next.shiftUntil == h.shiftUntil {
		return
	}
	if !h.storeOK {
		s.log.Info("store is back", "down_for", time.Since(h.since).Round(time.Millisecond))
	}
	s.health.Store(next)
}

// refreshLoop reloads the map every RefreshInterval and whenever a
// tether.map.changed event arrives, and sweeps the client cache.
func (s *Server) refreshLoop() {
	tick := time.NewTicker(s.cfg.RefreshInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-tick.C:
		case <-s.kick:
		}
		if err := s.Refresh(s.loopCtx); err == nil {
			// Keep misses and old entries for a while: they answer while
			// the store is down.
			s.clients.sweep(time.Now().Add(-max(time.Minute, 10*s.cfg.RefreshInterval)).UnixNano())
		}
		s.lim.sweep(time.Now())
	}
}

// changed is called after every admin change: it refreshes the local copy
// at once and tells the other directories (and anyone listening) on
// tether.map.changed.
func (s *Server) changed(ctx context.Context, reason string) int64 {
	if err := s.Refresh(ctx); err != nil {
		s.log.Warn("refresh after admin change failed", "err", err)
	}
	v := s.snapVersion()
	if s.nc != nil {
		if err := bus.PublishMapChanged(s.nc, s.subj, bus.MapChanged{Version: v, Source: bus.SourceDirectory, Reason: reason}); err != nil {
			s.log.Warn("publish map change failed", "err", err)
		}
	}
	return v
}
