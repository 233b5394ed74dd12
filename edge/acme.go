package edge

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/lego"
	"github.com/go-acme/lego/v4/registration"
)

// acmeClient is what the Manager needs from an ACME CA: the lego-backed legoIssuer for
// real CAs (Pebble in the integration tests) and a fake in the manager's unit tests.
type acmeClient interface {
	Obtain(ctx context.Context, req orderRequest) (Served, error)
	// RenewalInfo returns the CA's suggested window and how long to wait before asking
	// again; errNoARI when the CA offers no ARI.
	RenewalInfo(ctx context.Context, leaf *x509.Certificate) (ariAnswer, error)
}

// orderRequest is one order: the spec, its solver and the certificate it replaces.
type orderRequest struct {
	spec     CertificateSpec
	solver   solver
	key      crypto.Signer
	replaces *x509.Certificate
}

// ariAnswer is a suggested window plus the CA's Retry-After.
type ariAnswer struct {
	start, end time.Time
	retryAfter time.Duration
}

var errNoARI = errors.New("edge: CA offers no renewal information")

// legoIssuer talks to one ACME directory with one account through lego.
type legoIssuer struct {
	name     string
	cfg      IssuerConfig
	http     *http.Client
	accounts accountStore
	random   io.Reader

	mu   sync.Mutex // guards acct and its registration
	acct *account
}

var _ acmeClient = (*legoIssuer)(nil)

// client builds a lego client whose every request is bound to ctx (lego v4 takes no
// context), registering the account on first use.
func (li *legoIssuer) client(ctx context.Context) (*lego.Client, error) {
	li.mu.Lock()
	defer li.mu.Unlock()
	if li.acct == nil {
		acct, err := li.accounts.load(ctx, li.name, li.cfg, li.random)
		if err != nil {
			return nil, err
		}
		li.acct = acct
	}
	keyType, err := li.cfg.KeyType.lego()
	if err != nil {
		return nil, err
	}
	lc := lego.NewConfig(li.acct)
	lc.CADirURL = li.cfg.DirectoryURL
	lc.UserAgent = "certmesh-edge"
	lc.HTTPClient = withContext(ctx, li.http)
	lc.Certificate.KeyType = keyType
	client, err := lego.NewClient(lc)
	if err != nil {
		return nil, fmt.Errorf("edge: issuer %s: directory: %w", li.name, err)
	}
	if li.acct.reg == nil {
		if err := li.register(ctx, client); err != nil {
			return nil, err
		}
	}
	return client, nil
}

// register creates (or finds, for a known key) the account and records it.
func (li *legoIssuer) register(ctx context.Context, client *lego.Client) error {
	var (
		reg *registration.Resource
		err error
	)
	if li.cfg.EAB != nil {
		reg, err = client.Registration.RegisterWithExternalAccountBinding(registration.RegisterEABOptions{
			TermsOfServiceAgreed: true, Kid: li.cfg.EAB.KID, HmacEncoded: li.cfg.EAB.HMAC,
		})
	} else {
		reg, err = client.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
	}
	if err != nil {
		return fmt.Errorf("edge: issuer %s: register account: %w", li.name, classify(err))
	}
	li.acct.reg = reg
	return li.accounts.save(ctx, li.name, li.acct, li.cfg.DirectoryURL)
}

// Obtain runs one order to completion.
func (li *legoIssuer) Obtain(ctx context.Context, req orderRequest) (Served, error) {
	client, err := li.client(ctx)
	if err != nil {
		return Served{}, err
	}
	if err := req.solver.install(client); err != nil {
		return Served{}, err
	}
	obtain := certificate.ObtainRequest{
		Domains:        req.spec.DNSNames,
		PrivateKey:     req.key,
		Bundle:         true,
		PreferredChain: li.cfg.PreferredChain,
		Profile:        li.cfg.Profile,
	}
	if req.replaces != nil {
		if id, err := certificate.MakeARICertID(req.replaces); err == nil {
			obtain.ReplacesCertID = id
		}
	}
	res, err := client.Certificate.Obtain(obtain)
	if err != nil {
		return Served{}, fmt.Errorf("edge: obtain %s: %w", req.spec.Name, classify(err))
	}
	return parseServed(req.spec.Name, res.Certificate, res.PrivateKey, res.IssuerCertificate)
}

// RenewalInfo asks the CA's ARI endpoint about leaf.
func (li *legoIssuer) RenewalInfo(ctx context.Context, leaf *x509.Certificate) (ariAnswer, error) {
	client, err := li.client(ctx)
	if err != nil {
		return ariAnswer{}, err
	}
	info, err := client.Certificate.GetRenewalInfo(certificate.RenewalInfoRequest{Cert: leaf})
	if errors.Is(err, api.ErrNoARI) {
		return ariAnswer{}, errNoARI
	}
	if err != nil {
		return ariAnswer{}, fmt.Errorf("edge: renewal info: %w", classify(err))
	}
	return ariAnswer{
		start: info.SuggestedWindow.Start, end: info.SuggestedWindow.End, retryAfter: info.RetryAfter,
	}, nil
}

// newKey makes the private key of a new certificate.
func newKey(kt KeyType, random io.Reader) (crypto.Signer, error) {
	switch kt {
	case KeyRSA2048:
		return rsa.GenerateKey(random, 2048)
	default:
		return ecdsa.GenerateKey(elliptic.P256(), random)
	}
}

// issuerHTTPClient trusts only the issuer's CA bundle when one is given.
func issuerHTTPClient(iss IssuerConfig) (*http.Client, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.ResponseHeaderTimeout = time.Minute
	if len(iss.CABundle) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(iss.CABundle) {
			return nil, fmt.Errorf("%w: CA bundle holds no PEM certificate", ErrInvalidConfig)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: transport}, nil
}

// withContext returns a client whose requests carry ctx, so cancelling ctx aborts lego.
// It drops Client.Timeout: lego leaves some bodies unclosed (nonce HEADs), and each such
// body would pin a timer goroutine for the whole timeout; the transport's own timeouts
// and ctx bound every request instead.
func withContext(ctx context.Context, base *http.Client) *http.Client {
	c := *base
	c.Timeout = 0
	rt := base.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	c.Transport = ctxTransport{ctx: ctx, next: rt}
	return &c
}

type ctxTransport struct {
	ctx  context.Context
	next http.RoundTripper
}

func (t ctxTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.next.RoundTrip(req.WithContext(t.ctx))
}
