// Package upstream is the downstream side of an upstream certmesh server:
// a ca.UpstreamAuthority that has the upstream sign this server's
// intermediates (wire's Upstream service), authenticated as the
// downstream's own identity, spiffe://<upstream td>/certmesh/downstream/<name>.
//
// That identity works like a node agent's: a join token (or a
// ServiceAccount token) is presented once for an X.509-SVID, which is then
// renewed over mTLS at half life (Run) and presented on every request; the
// upstream re-authorizes it each time, so evicting the downstream there
// stops its next renewal.
package upstream

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"
	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/store"
	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/identity"
)

// Config configures a Client. Addr, Bundle and TokenFile are required.
type Config struct {
	// Addr is the upstream certmesh server's gRPC address.
	Addr string
	// Bundle holds the upstream's roots (`certmesh bundle` there), to
	// authenticate it; it is replaced by the roots each answer carries.
	Bundle *x509bundle.Bundle
	// TokenFile holds the join token or ServiceAccount token that grants the
	// downstream identity; it is read only when no valid SVID is held.
	TokenFile string
	// SVIDFile keeps the downstream identity's SVID and key (0600) across
	// restarts, so that a spent join token is not needed again. Optional.
	SVIDFile string
	// SVIDTTL is asked for the identity's SVID (default ca.DefaultMaxTTL).
	SVIDTTL time.Duration
	Clock   clock.Clock
	Logger  *slog.Logger
}

// ErrNoIdentity: no valid SVID and no usable token to get one.
var ErrNoIdentity = errors.New("upstream: no downstream identity: the SVID has expired and the token is refused or missing (create a new one on the upstream: certmesh token create --id spiffe://<td>/certmesh/downstream/<name>)")

// Client is a ca.UpstreamAuthority backed by an upstream certmesh server.
// Safe for concurrent use.
type Client struct {
	cfg Config

	mu     sync.Mutex
	bundle *x509bundle.Bundle
	svid   *x509svid.SVID
}

var _ ca.UpstreamAuthority = (*Client)(nil)

// New checks cfg and loads a kept SVID. It does not connect.
func New(cfg Config) (*Client, error) {
	if cfg.Addr == "" || cfg.Bundle == nil || cfg.TokenFile == "" {
		return nil, errors.New("upstream: config: Addr, Bundle and TokenFile are required")
	}
	if cfg.SVIDTTL <= 0 {
		cfg.SVIDTTL = ca.DefaultMaxTTL
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, bundle: cfg.Bundle}
	if cfg.SVIDFile != "" {
		svid, err := x509svid.Load(cfg.SVIDFile, cfg.SVIDFile)
		switch {
		case err == nil:
			c.svid = svid
		case !errors.Is(err, os.ErrNotExist):
			cfg.Logger.Warn("upstream: ignoring the kept SVID", "file", cfg.SVIDFile, "error", err)
		}
	}
	return c, nil
}

// SignIntermediate has the upstream sign req's CSR, over mTLS with the
// downstream identity's SVID (obtained or renewed first when needed).
func (c *Client) SignIntermediate(ctx context.Context, req ca.UpstreamRequest) (ca.UpstreamResponse, error) {
	svid, err := c.identity(ctx)
	if svid == nil {
		return ca.UpstreamResponse{}, err
	}
	if err != nil { // the SVID held is still valid: use it
		c.cfg.Logger.Warn("upstream: downstream identity not renewed", "error", err)
	}
	if err := checkTrustDomain(svid.ID, req.CSR); err != nil {
		return ca.UpstreamResponse{}, err
	}
	conn, err := c.dial(svid)
	if err != nil {
		return ca.UpstreamResponse{}, err
	}
	defer conn.Close()
	resp, err := wire.SignIntermediate(ctx, conn, wire.IntermediateRequest{CSR: req.CSR.Raw, TTL: req.TTL})
	if err != nil {
		return ca.UpstreamResponse{}, fmt.Errorf("upstream: SignIntermediate at %s: %w", c.cfg.Addr, err)
	}
	if len(resp.Roots) > 0 {
		c.mu.Lock()
		c.bundle = x509bundle.FromX509Authorities(c.bundle.TrustDomain(), resp.Roots)
		c.mu.Unlock()
	}
	return ca.UpstreamResponse{Chain: resp.Chain, Roots: resp.Roots}, nil
}

// Run keeps the downstream identity's SVID fresh between intermediate
// renewals (which are days apart, SVIDs hours long) until ctx ends.
// Failures are logged and retried; only SignIntermediate reports them.
func (c *Client) Run(ctx context.Context) error {
	for {
		wait := time.Minute
		if svid, err := c.identity(ctx); err != nil {
			c.cfg.Logger.Warn("upstream: downstream identity not renewed; will retry", "upstream", c.cfg.Addr, "error", err)
		} else if d := renewAt(svid).Sub(c.cfg.Clock.Now()); d > 0 {
			wait = d
		}
		t := c.cfg.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

// ErrTrustDomain: this CA's trust domain is not the one its downstream
// identity is granted.
var ErrTrustDomain = errors.New("upstream: the trust domain is not the one the upstream grants this downstream")

// checkTrustDomain says clearly, before asking, what the upstream would
// refuse opaquely: a CA for another trust domain than <name>.<upstream td>.
func checkTrustDomain(id spiffeid.ID, csr *x509.CertificateRequest) error {
	want, err := identity.DownstreamTrustDomain(id)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTrustDomain, err)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != want.IDString() {
		return fmt.Errorf("%w: %s may sign for %s only (start this server with --trust-domain %s)", ErrTrustDomain, id, want.Name(), want.Name())
	}
	return nil
}

// renewAt is half the SVID's life.
func renewAt(svid *x509svid.SVID) time.Time {
	leaf := svid.Certificates[0]
	return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
}

// identity returns an SVID for the downstream identity: the one held until
// half life, then one renewed over mTLS with it, or, once it has expired,
// one obtained with the token.
func (c *Client) identity(ctx context.Context) (*x509svid.SVID, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Clock.Now()
	held := c.svid
	if held != nil && now.Before(renewAt(held)) {
		return held, nil
	}
	var token string
	if held == nil || !now.Before(held.Certificates[0].NotAfter) {
		b, err := os.ReadFile(c.cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoIdentity, err)
		}
		token, held = strings.TrimSpace(string(b)), nil
	}
	svid, err := c.fetchSVID(ctx, held, token)
	if err != nil {
		if held == nil {
			return nil, fmt.Errorf("%w: %w", ErrNoIdentity, err)
		}
		return held, fmt.Errorf("upstream: renew the downstream identity: %w", err)
	}
	c.svid = svid
	c.keep(svid)
	c.cfg.Logger.Info("upstream: downstream identity obtained", "spiffe_id", svid.ID.String(), "not_after", svid.Certificates[0].NotAfter)
	return svid, nil
}

// fetchSVID asks the upstream's CreateCertificate for an SVID, presenting
// client over mTLS or token as a bearer token. Called with c.mu held.
func (c *Client) fetchSVID(ctx context.Context, client *x509svid.SVID, token string) (*x509svid.SVID, error) {
	key, err := ca.GenerateKey(ca.KeyECP256, rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("upstream: CSR: %w", err)
	}
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, wire.AuthorizationKey, "Bearer "+token)
	}
	conn, err := c.dialLocked(client)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		ValidityDuration: int64(c.cfg.SVIDTTL / time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("upstream: CreateCertificate at %s: %w", c.cfg.Addr, err)
	}
	return c.parseSVID(resp.GetCertChain(), key)
}

// parseSVID turns the leaf-first PEM chain into an SVID that verifies
// against the upstream's bundle. Called with c.mu held.
func (c *Client) parseSVID(chain []string, key crypto.Signer) (*x509svid.SVID, error) {
	var certs []*x509.Certificate
	for _, p := range chain {
		parsed, err := ca.ParseCertsPEM([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("upstream: answer: %w", err)
		}
		certs = append(certs, parsed...)
	}
	if n := len(certs); n > 1 && certs[n-1].CheckSignatureFrom(certs[n-1]) == nil {
		certs = certs[:n-1] // the root stays in the bundle
	}
	id, _, err := x509svid.Verify(certs, c.bundle, x509svid.WithTime(c.cfg.Clock.Now()))
	if err != nil {
		return nil, fmt.Errorf("upstream: answer does not verify: %w", err)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}

// keep writes svid to SVIDFile (errors are logged: the SVID still works).
func (c *Client) keep(svid *x509svid.SVID) {
	if c.cfg.SVIDFile == "" {
		return
	}
	certs, key, err := svid.Marshal()
	if err == nil {
		err = store.WriteFile(c.cfg.SVIDFile, append(certs, key...), 0o600)
	}
	if err != nil {
		c.cfg.Logger.Warn("upstream: could not keep the downstream SVID", "file", c.cfg.SVIDFile, "error", err)
	}
}

func (c *Client) dial(client *x509svid.SVID) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dialLocked(client)
}

// dialLocked connects to the upstream, authenticating it as its server ID
// under the bundle held, presenting client when set.
func (c *Client) dialLocked(client *x509svid.SVID) (*grpc.ClientConn, error) {
	authz := tlsconfig.AuthorizeID(wire.ServerID(c.bundle.TrustDomain()))
	tc := tlsconfig.TLSClientConfig(c.bundle, authz)
	if client != nil {
		tc = tlsconfig.MTLSClientConfig(client, c.bundle, authz)
	}
	conn, err := grpc.NewClient(c.cfg.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, fmt.Errorf("upstream: %s: %w", c.cfg.Addr, err)
	}
	return conn, nil
}
