package appsdk

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/token"
)

// Defaults of the Client options.
const (
	// DefaultTimeout bounds a push whose context has no deadline.
	DefaultTimeout = 5 * time.Second
	// DefaultSettle is the shortest time a device, group or service push
	// waits for replies before it may stop (see docs/subjects.md, gathering).
	DefaultSettle = 25 * time.Millisecond
)

// Option configures a Client. Options validate their argument and make New
// fail with an error wrapping ErrBadOption.
type Option func(*options) error

type options struct {
	subj        bus.Subjects
	keys        *token.Keyring
	timeout     time.Duration
	settle      time.Duration
	inboxPrefix string
	log         *slog.Logger
}

func defaultOptions() options {
	return options{
		subj:    bus.MustSubjects(""),
		timeout: DefaultTimeout,
		settle:  DefaultSettle,
		log:     slog.Default(),
	}
}

// WithPrefix sets the subject prefix (default "tether"); it must match the
// nodes' nats.prefix. It may have several dot-separated tokens.
func WithPrefix(prefix string) Option {
	return func(o *options) error {
		if prefix == "" {
			return fmt.Errorf("%w: WithPrefix: empty prefix", ErrBadOption)
		}
		s, err := bus.NewSubjects(prefix)
		if err != nil {
			return fmt.Errorf("%w: WithPrefix: %w", ErrBadOption, err)
		}
		o.subj = s
		return nil
	}
}

// WithKeys gives the Client the keyring Service.IssueToken signs with. It
// needs the signing key (HMAC secret or Ed25519 private key) of every
// service the app issues tokens for.
func WithKeys(kr *token.Keyring) Option {
	return func(o *options) error {
		if kr == nil {
			return fmt.Errorf("%w: WithKeys: nil keyring", ErrBadOption)
		}
		o.keys = kr
		return nil
	}
}

// WithDefaultTimeout sets how long a push waits for its receipt when its
// context has no deadline and no WithTimeout is given. Default 5s.
func WithDefaultTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: WithDefaultTimeout: %v is not positive", ErrBadOption, d)
		}
		o.timeout = d
		return nil
	}
}

// WithSettle sets the settle window of device, group and service pushes:
// the shortest time the Client gathers replies before it concludes that
// every node holding a target has answered. Default 25ms. A longer window
// tolerates slower links between NATS servers; 0 stops as soon as every node
// heard from so far has sent its final reply, which can miss a slower node.
func WithSettle(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("%w: WithSettle: %v is negative", ErrBadOption, d)
		}
		o.settle = d
		return nil
	}
}

// WithInboxPrefix sets one prefix for the reply subjects of every service's
// pushes. Default: each service's own, _INBOX_<service> (bus.InboxPrefix),
// the only one nodes answer on by default; a prefix given here must be
// allowed by the nodes' node.reply_prefixes, or they refuse the pushes.
func WithInboxPrefix(prefix string) Option {
	return func(o *options) error {
		if err := validInboxPrefix(prefix); err != nil {
			return fmt.Errorf("%w: WithInboxPrefix: %w", ErrBadOption, err)
		}
		o.inboxPrefix = prefix
		return nil
	}
}

func validInboxPrefix(p string) error {
	if p == "" {
		return errors.New("empty prefix")
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" {
			return fmt.Errorf("%q has an empty token", p)
		}
		if tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
			return fmt.Errorf("%q has a wildcard or a space", p)
		}
	}
	return nil
}

// WithLogger sets the logger for what the SDK cannot return as an error
// (malformed replies or events, a NATS flush that failed). Default
// slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: WithLogger: nil logger", ErrBadOption)
		}
		o.log = l
		return nil
	}
}

// PushOption configures one push. Invalid values make the push fail with an
// error wrapping ErrBadOption, before anything is published.
type PushOption func(*pushOptions) error

type pushOptions struct {
	msgID   string
	noAck   bool
	waitAll bool
	timeout time.Duration
}

// MaxMsgIDLen is the longest message ID WithMsgID accepts, in bytes.
const MaxMsgIDLen = 256

// WithMsgID sets the push's message ID (header Tether-Msg-Id). Devices get
// it as msg_id in the push frame; it comes back in Receipt.MsgID. Printable
// ASCII, at most MaxMsgIDLen bytes.
func WithMsgID(id string) PushOption {
	return func(o *pushOptions) error {
		if id == "" || len(id) > MaxMsgIDLen {
			return fmt.Errorf("%w: WithMsgID: length %d, want 1 to %d", ErrBadOption, len(id), MaxMsgIDLen)
		}
		for i := 0; i < len(id); i++ {
			if id[i] < 0x20 || id[i] > 0x7e {
				return fmt.Errorf("%w: WithMsgID: byte %#x at %d is not printable ASCII", ErrBadOption, id[i], i)
			}
		}
		o.msgID = id
		return nil
	}
}

// NoAck asks for no acks (header Tether-Ack: none): devices are told not to
// ack, each node answers at once with the number of connections it wrote
// to, and the Receipt's status is StatusSent (or StatusOffline).
func NoAck() PushOption {
	return func(o *pushOptions) error {
		o.noAck = true
		return nil
	}
}

// WaitAll makes a device push gather every node's final reply. Without it a
// device push returns as soon as one node reports an ack and no other node
// has announced a delivery it has not finished: by default a device holds
// one connection at a time, so there is nothing more to wait for. Use it
// with nodes that allow several connections per device. It has no effect on
// other pushes (connection pushes get one reply; group and service pushes
// always gather).
func WaitAll() PushOption {
	return func(o *pushOptions) error {
		o.waitAll = true
		return nil
	}
}

// WithTimeout bounds the push, in place of the Client's default timeout:
// the receipt is returned at the latest after d, or at the context's
// deadline if that comes first.
func WithTimeout(d time.Duration) PushOption {
	return func(o *pushOptions) error {
		if d <= 0 {
			return fmt.Errorf("%w: WithTimeout: %v is not positive", ErrBadOption, d)
		}
		o.timeout = d
		return nil
	}
}

// TokenOption sets an optional claim of a token issued by
// Service.IssueToken.
type TokenOption func(*token.IssueOptions) error

// WithTier sets the token's tier, such as "paid" or "free".
func WithTier(tier string) TokenOption {
	return func(o *token.IssueOptions) error {
		if err := protocol.ValidName(tier); err != nil {
			return fmt.Errorf("%w: WithTier: %w: %w", ErrBadOption, ErrBadName, err)
		}
		o.Tier = tier
		return nil
	}
}

// WithGroups adds groups to the token; the device's connections receive
// pushes to these groups.
func WithGroups(groups ...string) TokenOption {
	return func(o *token.IssueOptions) error {
		for _, g := range groups {
			if err := protocol.ValidName(g); err != nil {
				return fmt.Errorf("%w: WithGroups: %w: %w", ErrBadOption, ErrBadName, err)
			}
		}
		o.Groups = append(o.Groups, groups...)
		return nil
	}
}

// WithTTL sets the token's lifetime. Default token.DefaultTTL (24h).
func WithTTL(d time.Duration) TokenOption {
	return func(o *token.IssueOptions) error {
		if d <= 0 {
			return fmt.Errorf("%w: WithTTL: %v is not positive", ErrBadOption, d)
		}
		o.TTL = d
		return nil
	}
}

// HandlerOption configures a subscription made by HandleUpstream,
// HandleEvents or HandleAllEvents.
type HandlerOption func(*handlerOptions) error

type handlerOptions struct {
	queue       string
	concurrency int
}

// WithConcurrency runs the handler on n goroutines (default 1, in which
// case messages are handled one at a time, in order). With n > 1 messages
// are handled in parallel and their order is lost.
func WithConcurrency(n int) HandlerOption {
	return func(o *handlerOptions) error {
		if n < 1 {
			return fmt.Errorf("%w: WithConcurrency: %d is below 1", ErrBadOption, n)
		}
		o.concurrency = n
		return nil
	}
}

// WithQueue subscribes in a NATS queue group, so that each message goes to
// one member of the group. For HandleUpstream it overrides the queue
// argument; for HandleEvents it lets replicas share events instead of each
// getting all of them.
func WithQueue(queue string) HandlerOption {
	return func(o *handlerOptions) error {
		if err := protocol.ValidName(queue); err != nil {
			return fmt.Errorf("%w: WithQueue: %w: %w", ErrBadOption, ErrBadName, err)
		}
		o.queue = queue
		return nil
	}
}
