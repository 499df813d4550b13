package simulator

import (
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/tetherhq/tether/protocol"
)

// Kind is a kind of appliance in a fleet (vacuum cleaners, air
// conditioners...): how many there are, which service they use and how
// each behaves. Zero values mean the documented defaults.
type Kind struct {
	// Name names the kind and its devices: device n (from 1) of kind K is
	// "<FleetConfig.Prefix><K>-<n, 6 digits>". Required; a valid name
	// (protocol.ValidName).
	Name string
	// Service the devices use. Default: Name.
	Service string
	// Count is the number of devices. Required, > 0.
	Count int
	// Paid is the share of the devices, 0 to 1, whose tokens carry the tier
	// "paid" (spread evenly over the kind); the others carry "free".
	// Default 0.
	Paid float64
	// Groups: device n is in group Groups[(n-1) % len(Groups)]. Default:
	// no group.
	Groups []string
	// UpstreamEvery: each device sends an upstream message about this
	// often, the kind's devices taking turns at an even pace. Default 0:
	// never.
	UpstreamEvery time.Duration
	// UpstreamBytes is the size of each upstream message's data. Default 64.
	UpstreamBytes int
	// SessionLength, when > 0, is how long each connection lasts (± a
	// quarter, at random): the device then closes it normally (1000), stays
	// off for Offline and connects again. Default 0: it stays connected.
	SessionLength time.Duration
	// Offline is how long a device stays off between sessions (± a
	// quarter). Default 5s.
	Offline time.Duration
	// MinBackoff and MaxBackoff bound the delay between failed rounds over
	// the node list, as in DeviceConfig. Defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// Answers says how the devices answer pushes. Default: every push "ok".
	Answers Answers
	// ConnectAt delays the devices' first connection by this much after
	// the fleet starts (devices that arrive later, as on a busy evening).
	// Default 0.
	ConnectAt time.Duration
}

// Answers are the shares of pushes a kind answers in each way. They need
// not add up to 1: each is taken relative to their sum. All zero means
// every push is acked "ok".
type Answers struct {
	// OK: acked at once with result "ok".
	OK float64
	// Rejected: acked at once with result "rejected".
	Rejected float64
	// Slow: acked "ok" after SlowDelay.
	Slow float64
	// Never: never acked (the app's receipt says timeout).
	Never float64
	// SlowDelay is how long a slow answer takes. Default 1s.
	SlowDelay time.Duration
}

// Answer kinds, as Answers.Pick returns them.
const (
	AnswerOK       = "ok"
	AnswerRejected = "rejected"
	AnswerSlow     = "slow"
	AnswerNever    = "never"
)

// Pick returns the answer for a push, chosen by x in [0, 1).
func (a Answers) Pick(x float64) string {
	sum := a.OK + a.Rejected + a.Slow + a.Never
	if sum <= 0 {
		return AnswerOK
	}
	x *= sum
	switch {
	case x < a.OK:
		return AnswerOK
	case x < a.OK+a.Rejected:
		return AnswerRejected
	case x < a.OK+a.Rejected+a.Slow:
		return AnswerSlow
	}
	return AnswerNever
}

func (k *Kind) applyDefaults() {
	if k.Service == "" {
		k.Service = k.Name
	}
	if k.UpstreamBytes <= 0 {
		k.UpstreamBytes = 64
	}
	if k.Offline <= 0 {
		k.Offline = 5 * time.Second
	}
	if k.MinBackoff <= 0 {
		k.MinBackoff = 100 * time.Millisecond
	}
	if k.MaxBackoff <= 0 {
		k.MaxBackoff = 10 * time.Second
	}
	if k.Answers.SlowDelay <= 0 {
		k.Answers.SlowDelay = time.Second
	}
}

// validate checks a kind after defaults.
func (k *Kind) validate() error {
	var errs []error
	if err := protocol.ValidName(k.Name); err != nil {
		errs = append(errs, fmt.Errorf("kind %q: name: %w", k.Name, err))
	}
	if err := protocol.ValidName(k.Service); err != nil {
		errs = append(errs, fmt.Errorf("kind %q: service: %w", k.Name, err))
	}
	for _, g := range k.Groups {
		if err := protocol.ValidName(g); err != nil {
			errs = append(errs, fmt.Errorf("kind %q: group: %w", k.Name, err))
		}
	}
	if k.Count <= 0 {
		errs = append(errs, fmt.Errorf("kind %q: count %d: want > 0", k.Name, k.Count))
	}
	if k.Paid < 0 || k.Paid > 1 {
		errs = append(errs, fmt.Errorf("kind %q: paid share %v: want 0 to 1", k.Name, k.Paid))
	}
	a := k.Answers
	if a.OK < 0 || a.Rejected < 0 || a.Slow < 0 || a.Never < 0 {
		errs = append(errs, fmt.Errorf("kind %q: answer shares must not be negative", k.Name))
	}
	return errors.Join(errs...)
}

// Member is one device of a fleet, as its kind made it.
type Member struct {
	// Index is the device's number over the whole fleet, from 0: the kinds'
	// devices one after the other.
	Index int
	// Kind is the kind's name, and N the device's number within it, from 1.
	Kind string
	N    int
	// ID, Service, Tier ("paid", "free", or "" without kinds) and Groups
	// go into its token.
	ID, Service, Tier string
	Groups            []string
}

// members lists the devices of kinds [first, first+count) with IDs under
// prefix.
func members(kinds []Kind, prefix string, first, count int) []Member {
	var out []Member
	at := 0
	for _, k := range kinds {
		for n := 1; n <= k.Count; n++ {
			i := at + n - 1
			if i < first || i >= first+count {
				continue
			}
			m := Member{
				Index: i, Kind: k.Name, N: n, Service: k.Service,
				ID:   fmt.Sprintf("%s%s-%06d", prefix, k.Name, n),
				Tier: "free",
			}
			if PaidAt(k.Paid, n) {
				m.Tier = "paid"
			}
			if len(k.Groups) > 0 {
				m.Groups = []string{k.Groups[(n-1)%len(k.Groups)]}
			}
			out = append(out, m)
		}
		at += k.Count
	}
	return out
}

// PaidAt reports whether device n (from 1) of a kind with paid share s is
// paid: exactly round-down(n*s) of the first n are, evenly spread.
func PaidAt(s float64, n int) bool {
	return int(float64(n)*s) > int(float64(n-1)*s)
}

// Unit returns a number in [0, 1) that depends only on its inputs: the
// deterministic coin a fleet tosses for a device (index) and a key (a push's
// message ID, an event number), so that a fleet split over several
// processes makes the same choices as one.
func Unit(seed uint64, index int, key string) float64 {
	h := fnv.New64a()
	var b [16]byte
	for i := range 8 {
		b[i] = byte(seed >> (8 * i))
		b[8+i] = byte(uint64(index) >> (8 * i))
	}
	_, _ = h.Write(b[:])
	_, _ = h.Write([]byte(key))
	x := h.Sum64()
	// splitmix64 finaliser: FNV's low bits are weak.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}
