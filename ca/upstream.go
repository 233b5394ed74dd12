package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// UpstreamAuthority signs the CA's intermediates when the CA has no root of
// its own: another certmesh server (ca/upstream), later a Vault or cloud
// PCA. It is asked at the CA's first start and at every intermediate
// renewal; the CA keeps signing with the intermediate it holds while the
// upstream cannot answer.
type UpstreamAuthority interface {
	SignIntermediate(ctx context.Context, req UpstreamRequest) (UpstreamResponse, error)
}

// UpstreamRequest asks for a CA certificate for CSR's key.
type UpstreamRequest struct {
	// CSR carries the intermediate's key and one URI SAN, the trust
	// domain's ID (spiffe://td).
	CSR *x509.CertificateRequest
	// TTL is the lifetime asked for; the upstream may shorten it.
	TTL time.Duration
}

// UpstreamResponse is the signed intermediate and the upstream's trust bundle.
type UpstreamResponse struct {
	// Chain is the new intermediate alone (certmesh signs it with a root);
	// an upstream whose own intermediates sit between (Vault) would append
	// them, which this CA does not accept yet (ErrUpstreamChain).
	Chain []*x509.Certificate
	// Roots are the upstream's roots; one of them must have signed Chain.
	Roots []*x509.Certificate
}

// DefaultUpstreamTimeout bounds one request to the upstream.
const DefaultUpstreamTimeout = 30 * time.Second

// Errors of an upstream-signed CA.
var (
	ErrUpstream             = errors.New("ca: upstream authority")
	ErrUpstreamChain        = errors.New("ca: upstream answered a chain this CA cannot use")
	ErrUpstreamRootChanged  = errors.New("ca: upstream signed under a root other than this authority's")
	ErrUpstreamManagesRoots = errors.New("ca: roots come from the upstream authority; rotate them there")
)

// upstreamAuthority makes a new authority whose intermediate the upstream
// signs; it has no root key, and its root is the upstream's that signed.
func (c *CA) upstreamAuthority(now time.Time) (*Authority, error) {
	a, err := c.askUpstream(now, c.cfg.KeyType, nil)
	if err != nil {
		return nil, err
	}
	if a.jwt, err = newJWTKey(c.cfg.Rand); err != nil {
		return nil, err
	}
	return a, nil
}

// upstreamAnswer is a successor fetched from the upstream before c.mu is
// taken, or why there is none.
type upstreamAnswer struct {
	from *Authority // the authority it succeeds
	next *Authority
	err  error
}

// fetchUpstream asks the upstream for a successor of every authority whose
// intermediate is due, without holding c.mu: a slow or hanging upstream
// then delays only the renewal, never Status (metrics scrapes, `ca
// inspect`) or the rotation gate. Advance hands the answers to renewDue.
func (c *CA) fetchUpstream() map[string]upstreamAnswer {
	if c.cfg.Upstream == nil {
		return nil
	}
	c.mu.Lock()
	now := c.cfg.Clock.Now()
	due := map[string]*Authority{}
	for _, s := range c.state.Authorities {
		if c.intermediateStep(now, s).Due {
			due[s.ID] = c.authorities[s.ID]
		}
	}
	c.mu.Unlock()
	out := make(map[string]upstreamAnswer, len(due))
	for id, old := range due {
		next, err := c.upstreamSuccessor(old, now)
		out[id] = upstreamAnswer{from: old, next: next, err: err}
	}
	return out
}

// fetchedSuccessor is what fetchUpstream got for old. Called with c.mu held.
func (c *CA) fetchedSuccessor(old *Authority) (*Authority, error) {
	ans, ok := c.fetched[old.ID]
	switch {
	case !ok || ans.from != old:
		return nil, fmt.Errorf("%w: the renewal fell due while the upstream was being asked; retrying", ErrUpstream)
	case ans.err != nil:
		return nil, ans.err
	}
	return ans.next, nil
}

// upstreamSuccessor is old's successor with an intermediate from the
// upstream, under the same root. An upstream that rotated its root is
// refused (ErrUpstreamRootChanged): adopting it needs the new root in every
// workload's bundle first, as a root rotation does.
func (c *CA) upstreamSuccessor(old *Authority, now time.Time) (*Authority, error) {
	kt, err := KeyTypeOf(old.IntermediateKey.Public())
	if err != nil {
		return nil, err
	}
	next, err := c.askUpstream(now, kt, old)
	if err != nil {
		return nil, err
	}
	next.jwt, next.interName = old.jwt, intermediateName(next.Intermediate)
	return next, nil
}

// askUpstream generates a key, has the upstream sign it and checks the
// answer. With prev set, the root must be prev's and the ID is kept.
func (c *CA) askUpstream(now time.Time, kt KeyType, prev *Authority) (*Authority, error) {
	key, err := GenerateKey(kt, c.cfg.Rand)
	if err != nil {
		return nil, fmt.Errorf("ca: intermediate key: %w", err)
	}
	csr, err := intermediateCSR(c.cfg.TrustDomain.ID().URL(), key, c.cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.UpstreamTimeout)
	defer cancel()
	resp, err := c.cfg.Upstream.SignIntermediate(ctx, UpstreamRequest{CSR: csr, TTL: c.cfg.IntermediateTTL})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUpstream, err)
	}
	root, err := upstreamRoot(resp, now)
	if err != nil {
		return nil, err
	}
	id := authorityID(root)
	if prev != nil {
		if !root.Equal(prev.Root) {
			return nil, fmt.Errorf("%w: %s now, %s before", ErrUpstreamRootChanged, root.Subject, prev.Root.Subject)
		}
		id = prev.ID
	}
	return assemble(id, root, nil, resp.Chain[0], key)
}

// upstreamRoot checks that resp holds one CA certificate, valid now, that
// chains to one of its roots, and returns that root.
func upstreamRoot(resp UpstreamResponse, now time.Time) (*x509.Certificate, error) {
	if len(resp.Chain) != 1 || len(resp.Roots) == 0 {
		return nil, fmt.Errorf("%w: %d certificates and %d roots (want one intermediate and its roots)", ErrUpstreamChain, len(resp.Chain), len(resp.Roots))
	}
	inter := resp.Chain[0]
	if !inter.IsCA || inter.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%w: the intermediate is not a CA certificate", ErrUpstreamChain)
	}
	if now.Before(inter.NotBefore) || !now.Before(inter.NotAfter) {
		return nil, fmt.Errorf("%w: the intermediate is not valid now (%s to %s)", ErrUpstreamChain, inter.NotBefore, inter.NotAfter)
	}
	for _, r := range resp.Roots {
		if inter.CheckSignatureFrom(r) == nil {
			return r, nil
		}
	}
	return nil, fmt.Errorf("%w: none of the upstream's roots signed the intermediate", ErrUpstreamChain)
}

func intermediateCSR(td *url.URL, key crypto.Signer, cfg Config) (*x509.CertificateRequest, error) {
	der, err := x509.CreateCertificateRequest(cfg.Rand, &x509.CertificateRequest{
		Subject: pkix.Name{Organization: []string{"certmesh"}, CommonName: "certmesh intermediate " + cfg.TrustDomain.Name()},
		URIs:    []*url.URL{td},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("ca: intermediate CSR: %w", err)
	}
	return x509.ParseCertificateRequest(der)
}
