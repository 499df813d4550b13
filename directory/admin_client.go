package directory

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/store"
)

// AdminClient is a Go client of the directory's admin API. It is safe for
// concurrent use.
type AdminClient struct {
	base  string
	token string
	hc    *http.Client
}

// APIError is an error answer of the directory.
type APIError struct {
	// Status is the HTTP status.
	Status int
	// Code is the "error" member of the answer, such as "not_found".
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("directory: %d %s: %s", e.Status, e.Code, e.Message)
}

// NewAdminClient returns a client of the directory at baseURL (such as
// http://127.0.0.1:8080) authenticating with token. hc nil means a client
// with a 30s timeout.
func NewAdminClient(baseURL, token string, hc *http.Client) (*AdminClient, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("directory: admin URL %q: want http(s)://host:port", baseURL)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &AdminClient{base: strings.TrimRight(baseURL, "/"), token: token, hc: hc}, nil
}

// do sends a request and decodes a 2xx answer into out (when not nil).
func (c *AdminClient) do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("directory: %s %s: %w", method, path, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("directory: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("directory: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &APIError{Status: resp.StatusCode}
		var body apiError
		if json.Unmarshal(b, &body) == nil && body.Code != "" {
			e.Code, e.Message = body.Code, body.Message
		} else {
			e.Code, e.Message = http.StatusText(resp.StatusCode), strings.TrimSpace(string(b))
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("directory: %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

func (c *AdminClient) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("directory: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	return c.do(ctx, method, path, body, "application/json", out)
}

func (c *AdminClient) change(ctx context.Context, method, path string, in any) (int64, error) {
	var a ChangeAnswer
	err := c.doJSON(ctx, method, path, in, &a)
	return a.Version, err
}

func esc(s string) string { return url.PathEscape(s) }

// Map returns the whole map as stored, with liveness and connection counts.
func (c *AdminClient) Map(ctx context.Context) (AdminMap, error) {
	var m AdminMap
	err := c.doJSON(ctx, http.MethodGet, "/v1/admin/map", nil, &m)
	return m, err
}

// Services lists the services.
func (c *AdminClient) Services(ctx context.Context) ([]store.Service, error) {
	var out []store.Service
	err := c.doJSON(ctx, http.MethodGet, "/v1/admin/services", nil, &out)
	return out, err
}

// Service returns one service.
func (c *AdminClient) Service(ctx context.Context, name string) (store.Service, error) {
	var out store.Service
	err := c.doJSON(ctx, http.MethodGet, "/v1/admin/services/"+esc(name), nil, &out)
	return out, err
}

// PutService creates a service or changes its default tier and adds tiers.
func (c *AdminClient) PutService(ctx context.Context, name string, spec ServiceSpec) (int64, error) {
	return c.change(ctx, http.MethodPut, "/v1/admin/services/"+esc(name), spec)
}

// DeleteService removes a service and its assignments.
func (c *AdminClient) DeleteService(ctx context.Context, name string) (int64, error) {
	return c.change(ctx, http.MethodDelete, "/v1/admin/services/"+esc(name), nil)
}

// Nodes lists the nodes.
func (c *AdminClient) Nodes(ctx context.Context) ([]AdminNode, error) {
	var out []AdminNode
	err := c.doJSON(ctx, http.MethodGet, "/v1/admin/nodes", nil, &out)
	return out, err
}

// Node returns one node.
func (c *AdminClient) Node(ctx context.Context, id string) (AdminNode, error) {
	var out AdminNode
	err := c.doJSON(ctx, http.MethodGet, "/v1/admin/nodes/"+esc(id), nil, &out)
	return out, err
}

// PutNode declares or updates a node.
func (c *AdminClient) PutNode(ctx context.Context, id string, spec NodeSpec) (int64, error) {
	return c.change(ctx, http.MethodPut, "/v1/admin/nodes/"+esc(id), spec)
}

// SetNodeState changes a node's state.
func (c *AdminClient) SetNodeState(ctx context.Context, id string, state store.NodeState) (int64, error) {
	return c.change(ctx, http.MethodPut, "/v1/admin/nodes/"+esc(id)+"/state", StateSpec{State: state})
}

// RemoveNode removes a node and unassigns it everywhere.
func (c *AdminClient) RemoveNode(ctx context.Context, id string) (int64, error) {
	return c.change(ctx, http.MethodDelete, "/v1/admin/nodes/"+esc(id), nil)
}

func assignPath(service, tier, node string) string {
	return "/v1/admin/services/" + esc(service) + "/tiers/" + esc(tier) + "/nodes/" + esc(node)
}

// Assign adds a node to a service's tier.
func (c *AdminClient) Assign(ctx context.Context, service, tier, node string) (int64, error) {
	return c.change(ctx, http.MethodPut, assignPath(service, tier, node), nil)
}

// Unassign removes a node from a service's tier.
func (c *AdminClient) Unassign(ctx context.Context, service, tier, node string) (int64, error) {
	return c.change(ctx, http.MethodDelete, assignPath(service, tier, node), nil)
}

// Clients returns one page of client mappings in ID order, after `after`;
// limit 0 means the server's default (1000).
func (c *AdminClient) Clients(ctx context.Context, after string, limit int) (ClientPage, error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/v1/admin/clients"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var p ClientPage
	err := c.doJSON(ctx, http.MethodGet, path, nil, &p)
	return p, err
}

// AllClients returns every client mapping, page by page.
func (c *AdminClient) AllClients(ctx context.Context) ([]store.Client, error) {
	var out []store.Client
	after := ""
	for {
		p, err := c.Clients(ctx, after, maxClientPage)
		if err != nil {
			return out, err
		}
		out = append(out, p.Clients...)
		if p.Next == "" {
			return out, nil
		}
		after = p.Next
	}
}

// Client returns one client mapping.
func (c *AdminClient) Client(ctx context.Context, id string) (store.Client, error) {
	var out store.Client
	err := c.doJSON(ctx, http.MethodGet, "/v1/admin/clients/"+esc(id), nil, &out)
	return out, err
}

// PutClient maps a client to a service and (optionally) a tier.
func (c *AdminClient) PutClient(ctx context.Context, id string, spec ClientSpec) (int64, error) {
	return c.change(ctx, http.MethodPut, "/v1/admin/clients/"+esc(id), spec)
}

// DeleteClient removes a client mapping.
func (c *AdminClient) DeleteClient(ctx context.Context, id string) (int64, error) {
	return c.change(ctx, http.MethodDelete, "/v1/admin/clients/"+esc(id), nil)
}

// Seed applies a YAML seed (the format of store.Seed).
func (c *AdminClient) Seed(ctx context.Context, yamlSeed []byte) (int64, error) {
	var a ChangeAnswer
	err := c.do(ctx, http.MethodPost, "/v1/admin/seed", bytes.NewReader(yamlSeed), "application/yaml", &a)
	return a.Version, err
}

// Decisions returns the balancer's most recent decisions, newest first
// (limit 1 to 1000), and the leader's ID.
func (c *AdminClient) Decisions(ctx context.Context, limit int) (DecisionsAnswer, error) {
	var a DecisionsAnswer
	err := c.doJSON(ctx, http.MethodGet, "/v1/admin/decisions?limit="+strconv.Itoa(limit), nil, &a)
	return a, err
}

// IsNotFound reports whether err is a 404 answer.
func IsNotFound(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// Revoke records a revocation (POST /v1/admin/revocations) and returns it
// as recorded, defaults filled in.
func (c *AdminClient) Revoke(ctx context.Context, spec RevokeSpec) (bus.Revocation, error) {
	var out bus.Revocation
	err := c.doJSON(ctx, http.MethodPost, "/v1/admin/revocations", spec, &out)
	return out, err
}

// Revocations lists the revocations in force (GET /v1/admin/revocations).
func (c *AdminClient) Revocations(ctx context.Context) ([]bus.Revocation, error) {
	var out RevocationList
	err := c.doJSON(ctx, http.MethodGet, "/v1/admin/revocations", nil, &out)
	return out.Revocations, err
}
