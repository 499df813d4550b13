package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Revocations live in one hash, P + "revocations": field "dev/<S>/<D>" or
// "jti/<S>/<ID>", value the JSON Revocation.

// pruneScript deletes the fields of KEYS[1] named in ARGV (pairs of field
// and value) whose value is still the one read, so that a revocation
// recorded again meanwhile (with a later Until) is kept.
var pruneScript = redis.NewScript(`
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i+1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n`)

func (r *Redis) revocationsKey() string { return r.prefix + "revocations" }

// Revoke implements Store.
func (r *Redis) Revoke(ctx context.Context, rv Revocation) error {
	const op = "revoke"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkRevocation(op, rv); err != nil {
		return err
	}
	rv.NotBefore, rv.Until = rv.NotBefore.UTC(), rv.Until.UTC()
	key, field := r.revocationsKey(), revocationField(rv)
	for range maxAttempts {
		err := r.c.Watch(ctx, func(tx *redis.Tx) error {
			merged := rv
			old, err := tx.HGet(ctx, key, field).Result()
			switch {
			case errors.Is(err, redis.Nil):
			case err != nil:
				return err
			default:
				o, err := decode[Revocation](op, field, old)
				if err != nil {
					return err
				}
				merged = mergeRevocation(o, rv)
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, key, field, encode(merged))
				return nil
			})
			return err
		}, key)
		if !errors.Is(err, redis.TxFailedErr) {
			return fail(op, err)
		}
	}
	return fmt.Errorf("%s: %w: %d attempts", op, ErrConflict, maxAttempts)
}

// Revocations implements Store.
func (r *Redis) Revocations(ctx context.Context, now time.Time) ([]Revocation, error) {
	const op = "revocations"
	if err := canceled(ctx, op); err != nil {
		return nil, err
	}
	all, err := r.c.HGetAll(ctx, r.revocationsKey()).Result()
	if err != nil {
		return nil, fail(op, err)
	}
	out := make([]Revocation, 0, len(all))
	var expired []any
	for f, v := range all {
		rv, err := decode[Revocation](op, f, v)
		if err != nil {
			return nil, err
		}
		if rv.Until.Before(now) {
			expired = append(expired, f, v)
			continue
		}
		out = append(out, rv)
	}
	if len(expired) > 0 {
		if err := pruneScript.Run(ctx, r.c, []string{r.revocationsKey()}, expired...).Err(); err != nil {
			return nil, fail(op, err)
		}
	}
	sortRevocations(out)
	return out, nil
}
