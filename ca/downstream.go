package ca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DownstreamParams ask this CA, as an upstream, to sign a downstream
// certmesh's intermediate. The caller (ca/service) has authenticated the
// downstream and decided which trust domain it is granted.
type DownstreamParams struct {
	CSR *x509.CertificateRequest
	// TrustDomain is the one the downstream may sign for: the CSR must name
	// exactly it, and the certificate is name-constrained to it.
	TrustDomain spiffeid.TrustDomain
	TTL         time.Duration
}

// Refusals of a downstream's request.
var (
	ErrDownstreamCSR    = errors.New("ca: downstream CSR must name exactly its trust domain's ID as a URI SAN")
	ErrDownstreamNoRoot = errors.New("ca: this CA holds no root key to sign a downstream intermediate")
)

// SignDownstream signs a CA certificate for a downstream certmesh: IsCA,
// path length 0 (it signs leaves only), certSign, a URI SAN of its trust
// domain, and X.509 name constraints that permit URIs in that trust
// domain only, so that a leaf it signs for any other trust domain fails
// verification everywhere. It is signed by the active root, lives at most
// this CA's own intermediate TTL and never outlives the root.
func (c *CA) SignDownstream(p DownstreamParams) (UpstreamResponse, error) {
	if err := checkDownstreamCSR(p); err != nil {
		return UpstreamResponse{}, err
	}
	a := c.active.Load()
	if a.RootKey == nil {
		return UpstreamResponse{}, ErrDownstreamNoRoot
	}
	serial, err := newSerial(c.cfg.Rand)
	if err != nil {
		return UpstreamResponse{}, err
	}
	now := c.cfg.Clock.Now()
	ttl := p.TTL
	if ttl <= 0 || ttl > c.cfg.IntermediateTTL {
		ttl = c.cfg.IntermediateTTL
	}
	notAfter := now.Add(ttl)
	if notAfter.After(a.Root.NotAfter) {
		notAfter = a.Root.NotAfter
	}
	td := p.TrustDomain
	tmpl := &x509.Certificate{
		SerialNumber:                serial,
		Subject:                     pkix.Name{Organization: []string{"certmesh"}, CommonName: "certmesh downstream " + td.Name() + " " + serial.Text(16)[:8]},
		NotBefore:                   now.Add(-LeafBackdate),
		NotAfter:                    notAfter,
		IsCA:                        true,
		BasicConstraintsValid:       true,
		MaxPathLenZero:              true,
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                        p.CSR.URIs,
		PermittedURIDomains:         []string{td.Name()},
		PermittedDNSDomainsCritical: true,
	}
	der, err := x509.CreateCertificate(c.cfg.Rand, tmpl, a.Root, p.CSR.PublicKey, a.RootKey)
	if err != nil {
		return UpstreamResponse{}, fmt.Errorf("ca: sign downstream %s: %w", td.Name(), err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return UpstreamResponse{}, fmt.Errorf("ca: sign downstream %s: %w", td.Name(), err)
	}
	c.cfg.Logger.Info("signed a downstream CA", "trust_domain", td.Name(), "authority", a.ID, "not_after", notAfter)
	return UpstreamResponse{Chain: []*x509.Certificate{cert}, Roots: c.Roots()}, nil
}

// checkDownstreamCSR: one URI SAN, exactly spiffe://<granted td>, nothing else.
func checkDownstreamCSR(p DownstreamParams) error {
	csr := p.CSR
	if p.TrustDomain.IsZero() || csr == nil {
		return ErrDownstreamCSR
	}
	if len(csr.URIs) != 1 || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
		return fmt.Errorf("%w (it has %d URIs and other SANs)", ErrDownstreamCSR, len(csr.URIs))
	}
	if got := csr.URIs[0].String(); got != p.TrustDomain.IDString() {
		return fmt.Errorf("%w: asked for %q, granted %q", ErrDownstreamCSR, got, p.TrustDomain.IDString())
	}
	return nil
}
