package appsdk

import (
	"fmt"

	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/token"
)

// IssueToken signs a token for device of the service with the service's
// key from WithKeys. The device presents it to a node (and only nodes
// serving this service accept it). Without options the token has no tier,
// no groups and lives token.DefaultTTL.
func (s *Service) IssueToken(device string, opts ...TokenOption) (string, error) {
	kr := s.c.opts.keys
	if kr == nil {
		return "", ErrNoKeys
	}
	if err := protocol.ValidName(device); err != nil {
		return "", fmt.Errorf("%w: device: %w", ErrBadName, err)
	}
	var o token.IssueOptions
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return "", err
		}
	}
	tok, err := kr.Issue(s.name, device, o)
	if err != nil {
		return "", fmt.Errorf("appsdk: issue token for %s/%s: %w", s.name, device, err)
	}
	return tok, nil
}
