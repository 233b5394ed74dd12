package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ErrNoServer means no server answers on the admin socket.
var ErrNoServer = errors.New("admin: no certmesh server is running on this state directory")

// Client talks to a running server's admin socket.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client for the admin socket at path.
func NewClient(path string) *Client {
	return &Client{Socket: path, http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// CreateJoinToken asks the server for a one-time join token.
func (c *Client) CreateJoinToken(ctx context.Context, id string, ttl time.Duration) (TokenResponse, error) {
	var out TokenResponse
	err := c.do(ctx, http.MethodPost, "/v1/join-tokens", TokenRequest{ID: id, TTL: ttl.String()}, &out)
	return out, err
}

// Rotate starts a CA rotation on the server; out receives the new authority.
func (c *Client) Rotate(ctx context.Context, out any) error {
	return c.do(ctx, http.MethodPost, "/v1/ca/rotate", nil, out)
}

// Nodes fetches the node agents the server knows into out.
func (c *Client) Nodes(ctx context.Context, out any) error {
	return c.do(ctx, http.MethodGet, "/v1/nodes", nil, out)
}

// SetNode evicts or bans (action) the node agent id; out receives its record.
func (c *Client) SetNode(ctx context.Context, action, id string, out any) error {
	return c.do(ctx, http.MethodPost, "/v1/nodes/"+action, NodeRequest{ID: id}, out)
}

// ForceRotate activates the prepared root the server's rotation gate holds;
// out receives what was done.
func (c *Client) ForceRotate(ctx context.Context, out any) error {
	return c.do(ctx, http.MethodPost, "/v1/ca/rotate/force", nil, out)
}

// Status fetches the server's status into out.
func (c *Client) Status(ctx context.Context, out any) error {
	return c.do(ctx, http.MethodGet, "/v1/status", nil, out)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("admin: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://certmesh"+path, body)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w (%s): %v", ErrNoServer, c.Socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("admin: server refused: %s", e.Error)
		}
		return fmt.Errorf("admin: server answered %s", resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("admin: bad answer: %w", err)
		}
	}
	return nil
}
