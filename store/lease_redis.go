package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Leases live at P{map}:lease:<name>, holding "<token>:<holder>" with the
// lease's TTL as the key's expiry (Redis's own clock), and their token
// counters at P{map}:lease-seq:<name>. Both share the map's hash slot, so
// ApplyChanges can watch the lease with the map keys in one transaction
// (in a Cluster too).
var (
	// acquireScript takes a free lease or extends the caller's own.
	// KEYS: lease, seq. ARGV: holder, ttl ms. Returns {token, holder}:
	// token -1 when another holder has it.
	acquireScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local sep = string.find(v, ':', 1, true)
  local holder = string.sub(v, sep + 1)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {tonumber(string.sub(v, 1, sep - 1)), holder}
  end
  return {-1, holder}
end
local tok = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], tok .. ':' .. ARGV[1], 'PX', ARGV[2])
return {tok, ARGV[1]}`)
	// renewScript extends the lease if it is still the caller's.
	// KEYS: lease. ARGV: value, ttl ms. Returns 1, or 0 when lost.
	renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`)
	// releaseScript deletes the lease if it is still the caller's.
	releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1`)
)

func (r *Redis) leaseKey(name string) string { return r.prefix + "{map}:lease:" + name }
func (r *Redis) leaseSeqKey(name string) string {
	return r.prefix + "{map}:lease-seq:" + name
}
func leaseValue(l Lease) string { return strconv.FormatInt(l.Token, 10) + ":" + l.Holder }

func ms(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

// AcquireLease implements Store.
func (r *Redis) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error) {
	const op = "acquire lease"
	if err := canceled(ctx, op); err != nil {
		return Lease{}, err
	}
	if err := checkLease(op, name, holder, 0, false); err != nil {
		return Lease{}, err
	}
	if err := checkTTL(op, ttl); err != nil {
		return Lease{}, err
	}
	res, err := acquireScript.Run(ctx, r.c, []string{r.leaseKey(name), r.leaseSeqKey(name)}, holder, ms(ttl)).Slice()
	if err != nil {
		return Lease{}, fail(op, err)
	}
	if len(res) != 2 {
		return Lease{}, fmt.Errorf("%w: %s: answer %v", errCorrupt, op, res)
	}
	tok, _ := res[0].(int64)
	cur, _ := res[1].(string)
	if tok < 0 {
		return Lease{}, fmt.Errorf("store: %s %s: %w: %s", op, name, ErrLeaseHeld, cur)
	}
	return Lease{Name: name, Holder: holder, Token: tok}, nil
}

// RenewLease implements Store.
func (r *Redis) RenewLease(ctx context.Context, l Lease, ttl time.Duration) error {
	const op = "renew lease"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkLease(op, l.Name, l.Holder, l.Token, true); err != nil {
		return err
	}
	if err := checkTTL(op, ttl); err != nil {
		return err
	}
	ok, err := renewScript.Run(ctx, r.c, []string{r.leaseKey(l.Name)}, leaseValue(l), ms(ttl)).Int()
	if err != nil {
		return fail(op, err)
	}
	if ok != 1 {
		return fmt.Errorf("store: %s %s: %w", op, l.Name, ErrLeaseLost)
	}
	return nil
}

// ReleaseLease implements Store.
func (r *Redis) ReleaseLease(ctx context.Context, l Lease) error {
	const op = "release lease"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkLease(op, l.Name, l.Holder, l.Token, true); err != nil {
		return err
	}
	return fail(op, releaseScript.Run(ctx, r.c, []string{r.leaseKey(l.Name)}, leaseValue(l)).Err())
}

// LeaseHolder implements Store.
func (r *Redis) LeaseHolder(ctx context.Context, name string) (Lease, error) {
	const op = "lease holder"
	if err := canceled(ctx, op); err != nil {
		return Lease{}, err
	}
	if err := checkName(op, "lease name", name); err != nil {
		return Lease{}, err
	}
	v, err := r.c.Get(ctx, r.leaseKey(name)).Result()
	if errors.Is(err, redis.Nil) {
		return Lease{}, notFound(op, "lease", name)
	}
	if err != nil {
		return Lease{}, fail(op, err)
	}
	return parseLease(op, name, v)
}

func parseLease(op, name, v string) (Lease, error) {
	tok, holder, ok := strings.Cut(v, ":")
	t, err := strconv.ParseInt(tok, 10, 64)
	if !ok || err != nil {
		return Lease{}, fmt.Errorf("%w: %s: lease %s: %q", errCorrupt, op, name, v)
	}
	return Lease{Name: name, Holder: holder, Token: t}, nil
}

// ApplyChanges implements Store.
func (r *Redis) ApplyChanges(ctx context.Context, l Lease, ifVersion int64, changes []Change) (int64, error) {
	const op = "apply changes"
	if err := canceled(ctx, op); err != nil {
		return 0, err
	}
	if err := checkLease(op, l.Name, l.Holder, l.Token, true); err != nil {
		return 0, err
	}
	if err := checkChanges(op, ifVersion, changes); err != nil {
		return 0, err
	}
	var version int64
	var incr *redis.IntCmd
	err := r.changeWatching(ctx, op, []string{r.leaseKey(l.Name)}, func(tx *redis.Tx) (func(redis.Pipeliner), error) {
		incr = nil
		cur, err := tx.Get(ctx, r.leaseKey(l.Name)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		if cur != leaseValue(l) {
			return nil, fmt.Errorf("store: %s: %s: %w", op, l.Name, ErrLeaseLost)
		}
		v, err := tx.Get(ctx, r.version).Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		if ifVersion != 0 && ifVersion != v {
			return nil, conflict(op, ifVersion, v)
		}
		version = v
		svcs := map[string]Service{}
		nodes := map[string]nodeRec{}
		for _, c := range changes {
			if c.Node != "" {
				if _, ok := nodes[c.Node]; !ok {
					data, err := tx.HGet(ctx, r.nodes, c.Node).Result()
					if errors.Is(err, redis.Nil) {
						return nil, notFound(op, "node", c.Node)
					}
					if err != nil {
						return nil, err
					}
					if nodes[c.Node], err = decode[nodeRec](op, "node "+c.Node, data); err != nil {
						return nil, err
					}
				}
				continue
			}
			if _, ok := svcs[c.Service]; !ok {
				s, ok, err := r.getService(ctx, tx, op, c.Service)
				if err != nil {
					return nil, err
				}
				if !ok {
					return nil, notFound(op, "service", c.Service)
				}
				svcs[c.Service] = s
			}
			if len(c.Nodes) > 0 {
				found, err := tx.HMGet(ctx, r.nodes, c.Nodes...).Result()
				if err != nil {
					return nil, err
				}
				for i, f := range found {
					if f == nil {
						return nil, notFound(op, "node", c.Nodes[i])
					}
				}
			}
		}
		changedSvc, changedNode := map[string]bool{}, map[string]bool{}
		for _, c := range changes {
			if c.Node != "" {
				rec := nodes[c.Node]
				if rec.State != c.State {
					rec.State = c.State
					nodes[c.Node] = rec
					changedNode[c.Node] = true
				}
				continue
			}
			s := svcs[c.Service]
			if setTier(&s, c.Tier, c.Nodes) {
				changedSvc[c.Service] = true
			}
		}
		if len(changedSvc)+len(changedNode) == 0 {
			return nil, nil
		}
		return func(p redis.Pipeliner) {
			for name := range changedSvc {
				p.HSet(ctx, r.services, name, encode(svcs[name]))
			}
			for id := range changedNode {
				p.HSet(ctx, r.nodes, id, encode(nodes[id]))
			}
			incr = p.Incr(ctx, r.version)
		}, nil
	})
	if err != nil {
		return 0, err
	}
	if incr != nil {
		version = incr.Val()
	}
	return version, nil
}

func (r *Redis) logKey(log string) string { return r.prefix + "log:" + log }

// AddRecord implements Store.
func (r *Redis) AddRecord(ctx context.Context, log string, rec []byte, keep int) error {
	const op = "add record"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkLog(op, log, keep); err != nil {
		return err
	}
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, r.logKey(log), rec)
		p.LTrim(ctx, r.logKey(log), 0, int64(keep-1))
		return nil
	})
	return fail(op, err)
}

// Records implements Store.
func (r *Redis) Records(ctx context.Context, log string, limit int) ([][]byte, error) {
	const op = "records"
	if err := canceled(ctx, op); err != nil {
		return nil, err
	}
	if err := checkLog(op, log, limit); err != nil {
		return nil, err
	}
	vals, err := r.c.LRange(ctx, r.logKey(log), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, fail(op, err)
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = []byte(v)
	}
	return out, nil
}
