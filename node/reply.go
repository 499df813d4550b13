package node

import (
	"fmt"
	"strings"

	"github.com/tetherhq/tether/bus"
)

// replyPrefixes are node.reply_prefixes, compiled: a push's reply subject
// must start with one of them (with "{service}" standing for the push's
// service), or the node refuses the push. Otherwise an app could have a
// node publish its receipt, with the app's chosen msg_id, on another
// service's push subject (a push to that service's devices) or inbox.
type replyPrefixes []replyPrefix

// replyPrefix is one prefix: before, then (when templated) the service
// and after.
type replyPrefix struct {
	before, after string
	templated     bool
}

func compileReplyPrefixes(list []string, subj bus.Subjects) (replyPrefixes, error) {
	var out replyPrefixes
	for i, p := range list {
		if err := validReplyPrefix(p); err != nil {
			return nil, fmt.Errorf("node.reply_prefixes[%d]: %w", i, err)
		}
		before, after, templated := strings.Cut(p, "{service}")
		sample := before
		if templated {
			sample += "x" + after
		}
		if strings.HasPrefix(sample, subj.Prefix()+".") || strings.HasPrefix(subj.Prefix()+".", sample) {
			return nil, fmt.Errorf("node.reply_prefixes[%d]: %q overlaps the subject prefix %q: replies must never reach tether's own subjects", i, p, subj.Prefix())
		}
		out = append(out, replyPrefix{before: before, after: after, templated: templated})
	}
	return out, nil
}

// allowed reports whether reply is a subject the node may answer a push of
// service on. It does not allocate.
func (rp replyPrefixes) allowed(service, reply string) bool {
	if strings.ContainsAny(reply, "*> \t\r\n") {
		return false
	}
	for _, p := range rp {
		rest, ok := strings.CutPrefix(reply, p.before)
		if !ok {
			continue
		}
		if p.templated {
			if rest, ok = strings.CutPrefix(rest, service); !ok {
				continue
			}
			if rest, ok = strings.CutPrefix(rest, p.after); !ok {
				continue
			}
		}
		if rest != "" {
			return true
		}
	}
	return false
}
