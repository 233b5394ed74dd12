package sds

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/certmesh/certmesh/ca/wire"
)

// ErrBadAnswer means the CA answered with something that is not a valid
// SVID for the identity asked for; it is never served.
var ErrBadAnswer = errors.New("sds: CA answered with an unusable certificate")

// caClient talks to the CA server over two connections: one that only
// authenticates the server (bootstrap with a token, bundle streams) and one
// presenting the agent's own SVID, rebuilt whenever that SVID changes.
type caClient struct {
	addr    string
	td      spiffeid.TrustDomain
	bundles x509bundle.Source

	mu       sync.Mutex
	plain    *grpc.ClientConn
	mtls     *grpc.ClientConn
	mtlsSVID *x509svid.SVID

	caCerts parsedCerts
}

// parsedCerts keeps the CA certificates of recent answers, parsed, by their
// PEM text: every answer carries the same root (and intermediates) until a
// rotation, and parsing them again was a tenth of the agent's work per
// SVID. Same text, same certificate; the leaf is always parsed, and the
// chain is verified against the bundle as before.
type parsedCerts struct {
	mu sync.Mutex
	m  map[string]*x509.Certificate
}

// maxParsedCerts bounds the cache: a few roots and intermediates across a
// rotation, never one per answer.
const maxParsedCerts = 8

func (p *parsedCerts) get(pemText string) (*x509.Certificate, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.m[pemText]
	return c, ok
}

func (p *parsedCerts) put(pemText string, c *x509.Certificate) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil || len(p.m) >= maxParsedCerts {
		p.m = map[string]*x509.Certificate{}
	}
	p.m[pemText] = c
}

func newCAClient(addr string, td spiffeid.TrustDomain, bundles x509bundle.Source) (*caClient, error) {
	authz := tlsconfig.AuthorizeID(wire.ServerID(td))
	conn, err := grpc.NewClient(addr, connectParams, grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.TLSClientConfig(bundles, authz))))
	if err != nil {
		return nil, fmt.Errorf("sds: CA client: %w", err)
	}
	return &caClient{addr: addr, td: td, bundles: bundles, plain: conn}, nil
}

// conn returns the connection to use: mTLS with client when given.
func (c *caClient) conn(client *x509svid.SVID) (*grpc.ClientConn, error) {
	if client == nil {
		return c.plain, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mtls != nil && c.mtlsSVID == client {
		return c.mtls, nil
	}
	if c.mtls != nil {
		_ = c.mtls.Close()
	}
	authz := tlsconfig.AuthorizeID(wire.ServerID(c.td))
	conn, err := grpc.NewClient(c.addr, connectParams, grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.MTLSClientConfig(client, c.bundles, authz))))
	if err != nil {
		return nil, fmt.Errorf("sds: CA client: %w", err)
	}
	c.mtls, c.mtlsSVID = conn, client
	return conn, nil
}

func (c *caClient) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.plain.Close()
	if c.mtls != nil {
		_ = c.mtls.Close()
	}
}

// BusyError means the CA shed the request and advised when to come back.
type BusyError struct {
	RetryAfter time.Duration
	Err        error
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("sds: CA busy, retry after %v: %v", e.RetryAfter, e.Err)
}

func (e *BusyError) Unwrap() error { return e.Err }

// retryAfter reads the CA's advice (bounded: a hostile or broken server
// cannot park an agent for long), defaulting to one second.
func retryAfter(md metadata.MD) time.Duration {
	const maxAdvice = time.Minute
	if v := md.Get(wire.RetryAfterKey); len(v) == 1 {
		if ms, err := strconv.Atoi(v[0]); err == nil && ms > 0 {
			return min(time.Duration(ms)*time.Millisecond, maxAdvice)
		}
	}
	return time.Second
}

// connectParams keep gRPC's own reconnect delay short and bounded: the
// agent's backoff (with jitter) decides how often the CA is asked.
var connectParams = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
	MinConnectTimeout: 5 * time.Second,
})

// signRequest is one certificate to obtain. Exactly one of bearer and
// client authenticates; impersonate names a workload for a node agent.
type signRequest struct {
	key         crypto.Signer
	ttl         time.Duration
	bearer      string
	client      *x509svid.SVID
	impersonate spiffeid.ID
}

// sign sends a CSR for req.key and checks the answer before returning it.
func (c *caClient) sign(ctx context.Context, req signRequest) (*x509svid.SVID, error) {
	csr, err := newCSR(req.key)
	if err != nil {
		return nil, fmt.Errorf("sds: CSR: %w", err)
	}
	in := &pb.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		ValidityDuration: int64(req.ttl / time.Second),
	}
	if !req.impersonate.IsZero() {
		in.Metadata, _ = structpb.NewStruct(map[string]any{wire.ImpersonatedIdentityKey: req.impersonate.String()})
	}
	if req.bearer != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, wire.AuthorizationKey, "Bearer "+req.bearer)
	}
	conn, err := c.conn(req.client)
	if err != nil {
		return nil, err
	}
	var trailer metadata.MD
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, in, grpc.Trailer(&trailer))
	if err != nil {
		if status.Code(err) == codes.ResourceExhausted {
			return nil, &BusyError{RetryAfter: retryAfter(trailer), Err: err}
		}
		return nil, fmt.Errorf("sds: CreateCertificate: %w", err)
	}
	return c.parseAnswer(resp.GetCertChain(), req)
}

// parseAnswer turns a leaf-first PEM chain into an SVID (leaf and
// intermediates; the root stays in the bundle) and verifies it.
func (c *caClient) parseAnswer(chain []string, req signRequest) (*x509svid.SVID, error) {
	var certs []*x509.Certificate
	for i, p := range chain {
		if i > 0 {
			if cert, ok := c.caCerts.get(p); ok {
				certs = append(certs, cert)
				continue
			}
		}
		n := len(certs)
		rest := []byte(p)
		for {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadAnswer, err)
			}
			certs = append(certs, cert)
		}
		if i > 0 && len(certs) == n+1 {
			c.caCerts.put(p, certs[n])
		}
	}
	if len(certs) < 2 {
		return nil, fmt.Errorf("%w: chain has %d certificates", ErrBadAnswer, len(certs))
	}
	if c.isRoot(certs[len(certs)-1]) {
		certs = certs[:len(certs)-1] // drop the self-signed root
	}
	id, _, err := x509svid.Verify(certs, c.bundles)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadAnswer, err)
	}
	if !req.impersonate.IsZero() && id != req.impersonate {
		return nil, fmt.Errorf("%w: asked for %s, got %s", ErrBadAnswer, req.impersonate, id)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: req.key}, nil
}

// isRoot says whether cert is a self-signed root. The usual answer ends
// with a root of the bundle, recognized by its bytes: checking its
// self-signature again for every SVID was a sixth of a node agent's CPU at
// start. Any other CA certificate gets the signature check. Either way the
// leaf is then verified against the bundle, as before.
func (c *caClient) isRoot(cert *x509.Certificate) bool {
	if !cert.IsCA {
		return false
	}
	if b, err := c.bundles.GetX509BundleForTrustDomain(c.td); err == nil && b.HasX509Authority(cert) {
		return true
	}
	return cert.CheckSignatureFrom(cert) == nil
}

// fetchJWT asks the CA for a JWT-SVID for id (the node's own or a workload's),
// with bearer (when not empty) beside the client SVID.
func (c *caClient) fetchJWT(ctx context.Context, client *x509svid.SVID, bearer string, id spiffeid.ID, audience []string, bundle *jwtbundle.Bundle) (*jwtsvid.SVID, error) {
	if bearer != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, wire.AuthorizationKey, "Bearer "+bearer)
	}
	conn, err := c.conn(client)
	if err != nil {
		return nil, err
	}
	resp, err := workloadpb.NewSpiffeWorkloadAPIClient(conn).FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: audience, SpiffeId: id.String()})
	if err != nil {
		return nil, fmt.Errorf("sds: FetchJWTSVID: %w", err)
	}
	if len(resp.GetSvids()) != 1 {
		return nil, fmt.Errorf("%w: %d JWT-SVIDs", ErrBadAnswer, len(resp.GetSvids()))
	}
	svid, err := jwtsvid.ParseAndValidate(resp.GetSvids()[0].GetSvid(), bundle, audience)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadAnswer, err)
	}
	if svid.ID != id {
		return nil, fmt.Errorf("%w: JWT for %s, asked for %s", ErrBadAnswer, svid.ID, id)
	}
	return svid, nil
}
