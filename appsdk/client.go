package appsdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/protocol"
)

// Client pushes to devices and receives their messages and events over a
// NATS connection. It serves any number of services (see Service) and is
// safe for concurrent use by any number of goroutines.
//
// Receipts come back on one wildcard inbox subscription per service the
// Client pushes to, _INBOX_<service>.<unique>.* (bus.InboxPrefix), made at
// its first push: each push waits on its own token of that subscription, so
// a push costs no subscription and no goroutine. Nodes answer a push only
// under its service's inbox prefix (node.reply_prefixes), so NATS
// permissions can keep each app team's receipts to itself.
type Client struct {
	nc    *nats.Conn
	owned bool // Close closes nc
	opts  options
	log   *slog.Logger

	unique string // "<unique>.", after the inbox prefix
	// inboxDone is closed when an inbox subscription ends: on Close, or
	// when the NATS connection closes under the Client.
	inboxDone chan struct{}
	doneOnce  sync.Once
	seq       atomic.Uint64

	// interest follows which nodes hold each service's connections and
	// groups, for fan-out receipts (interest.go).
	interest interests

	mu      sync.Mutex
	inboxes map[string]*inbox // by service; by "" with WithInboxPrefix
	waiters map[string]*waiter
	subs    map[*Subscription]struct{}
	closed  bool

	// ctx is cancelled by Close; handlers' contexts derive from it.
	ctx    context.Context
	cancel context.CancelFunc
}

// New returns a Client that uses nc, which stays the caller's: Close does
// not close it. It subscribes the Client's reply inbox at once.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil NATS connection", ErrBadOption)
	}
	o := defaultOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if nc.IsClosed() {
		return nil, ErrConnClosed
	}
	c := &Client{
		nc:        nc,
		opts:      o,
		log:       o.log.With("component", "appsdk"),
		unique:    strings.TrimPrefix(nats.NewInbox(), nats.InboxPrefix) + ".",
		inboxes:   make(map[string]*inbox),
		waiters:   make(map[string]*waiter),
		subs:      make(map[*Subscription]struct{}),
		inboxDone: make(chan struct{}),
	}
	c.interest.c = c
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if o.inboxPrefix != "" {
		// One inbox for every service, subscribed at once.
		if _, err := c.inboxOf(""); err != nil {
			c.cancel()
			return nil, err
		}
		c.flush()
	}
	return c, nil
}

// inbox is one wildcard reply subscription, <prefix>.<unique>.*.
type inbox struct {
	subject string // "<prefix>.<unique>.", each push appends its token
	sub     *nats.Subscription
}

// inboxOf returns the reply subject prefix for pushes of service,
// subscribing it on first use: _INBOX_<service>.<unique>., or
// WithInboxPrefix's for every service.
func (c *Client) inboxOf(service string) (string, error) {
	key, prefix := service, bus.InboxPrefix(service)
	if c.opts.inboxPrefix != "" {
		key, prefix = "", c.opts.inboxPrefix
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", ErrClosed
	}
	if ib := c.inboxes[key]; ib != nil {
		return ib.subject, nil
	}
	ib := &inbox{subject: prefix + "." + c.unique}
	// The subscription is sent before the push that follows it on this
	// connection, so the server has it when the replies come.
	sub, err := c.nc.Subscribe(ib.subject+"*", func(m *nats.Msg) { c.onReply(ib, m) })
	if err != nil {
		return "", fmt.Errorf("appsdk: subscribe inbox %s*: %w", ib.subject, natsErr(err))
	}
	// Replies are small and bursty (a service push is answered by every
	// node at once); never drop them for a pending limit.
	_ = sub.SetPendingLimits(-1, -1)
	stopped := func(string) { c.doneOnce.Do(func() { close(c.inboxDone) }) }
	sub.SetClosedHandler(stopped)
	if !sub.IsValid() {
		stopped("") // closed before the handler was set
	}
	ib.sub = sub
	c.inboxes[key] = ib
	return ib.subject, nil
}

// Connect dials NATS with cfg (through bus.Connect: reconnects forever,
// credentials, TLS) and returns a Client that owns the connection: Close
// closes it. cfg.Prefix is the subject prefix unless WithPrefix is given.
func Connect(ctx context.Context, cfg bus.Config, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	nc, err := bus.Connect(ctx, cfg, "tether-app", o.log)
	if err != nil {
		return nil, fmt.Errorf("appsdk: %w", err)
	}
	if cfg.Prefix != "" {
		opts = append([]Option{WithPrefix(cfg.Prefix)}, opts...)
	}
	c, err := New(nc, opts...)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.owned = true
	return c, nil
}

// Conn returns the Client's NATS connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// Subjects returns the subject builder for the Client's prefix.
func (c *Client) Subjects() bus.Subjects { return c.opts.subj }

// Close stops the Client: pushes in flight return ErrClosed, every
// subscription made through the Client is unsubscribed (handlers running
// finish on their own; their contexts are cancelled), and the NATS
// connection is closed if the Client owns it (Connect). It is idempotent.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	subs := make([]*Subscription, 0, len(c.subs))
	for s := range c.subs {
		subs = append(subs, s)
	}
	inboxes := make([]*inbox, 0, len(c.inboxes))
	for _, ib := range c.inboxes {
		inboxes = append(inboxes, ib)
	}
	c.mu.Unlock()
	// Wakes every waiting push.
	c.cancel()
	c.interest.close()
	for _, ib := range inboxes {
		_ = ib.sub.Unsubscribe()
	}
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	if c.owned {
		c.nc.Close()
	}
}

// flush makes sure the server has the subscriptions made so far. It fails
// only while NATS is unreachable, and then the subscriptions are made on
// reconnect, so the failure is logged, not returned.
func (c *Client) flush() {
	if err := c.nc.FlushTimeout(c.opts.timeout); err != nil {
		c.log.Warn("NATS flush failed; subscriptions are sent on reconnect", "err", err)
	}
}

// Service returns a handle for pushing to the devices of service and
// receiving their messages and events. It is cheap; call it once per
// service and keep it, or call it as often as convenient.
func (c *Client) Service(name string) (*Service, error) {
	if err := protocol.ValidName(name); err != nil {
		return nil, fmt.Errorf("%w: service: %w", ErrBadName, err)
	}
	return &Service{c: c, name: name}, nil
}

// Service is one service of a Client. It is safe for concurrent use.
type Service struct {
	c    *Client
	name string
}

// Name returns the service's name.
func (s *Service) Name() string { return s.name }

// Client returns the Client the service belongs to.
func (s *Service) Client() *Client { return s.c }

// waiter collects the replies of one push. The inbox handler appends; the
// pushing goroutine takes.
type waiter struct {
	mu     sync.Mutex
	msgs   []*nats.Msg
	signal chan struct{} // capacity 1: "msgs is not empty"
}

func (w *waiter) put(m *nats.Msg) {
	w.mu.Lock()
	w.msgs = append(w.msgs, m)
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (w *waiter) take(buf []*nats.Msg) []*nats.Msg {
	w.mu.Lock()
	buf = append(buf[:0], w.msgs...)
	clear(w.msgs)
	w.msgs = w.msgs[:0]
	w.mu.Unlock()
	return buf
}

// register adds a waiter and returns its reply subject.
func (c *Client) register() (string, *waiter, error) {
	tok := strconv.FormatUint(c.seq.Add(1), 36)
	w := &waiter{signal: make(chan struct{}, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", nil, ErrClosed
	}
	c.waiters[tok] = w
	return tok, w, nil
}

func (c *Client) unregister(tok string) {
	c.mu.Lock()
	delete(c.waiters, tok)
	c.mu.Unlock()
}

// onReply routes a message on the inbox to its push. It runs on the inbox
// subscription's goroutine and must not block.
func (c *Client) onReply(ib *inbox, m *nats.Msg) {
	tok := m.Subject[len(ib.subject):]
	c.mu.Lock()
	w := c.waiters[tok]
	c.mu.Unlock()
	if w != nil {
		w.put(m)
	}
	// No waiter: a reply after its push returned (a slow node's final
	// reply, say). Nothing wants it.
}

// pending returns the number of pushes waiting for replies.
func (c *Client) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// natsErr maps nats.go errors to the SDK's sentinels, keeping both.
func natsErr(err error) error {
	switch {
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining):
		return fmt.Errorf("%w: %w", ErrConnClosed, err)
	case errors.Is(err, nats.ErrMaxPayload):
		return fmt.Errorf("%w: %w", ErrPayloadTooLarge, err)
	}
	return err
}
