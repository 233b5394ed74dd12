package ca

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// A plugged CA is an operator's CA certificate and key (Istio's cacerts,
// a cert-manager CA's kubernetes.io/tls Secret) that certmesh signs with
// under the operator's root. certmesh holds no root key for it, so it never
// renews its intermediate (NextIntermediateDue says why); the operator
// replaces the material and Plug rolls it in.

// PluginPart names one piece of plug-in CA material, so that the caller
// can name where it came from (a Secret's key) in an error.
type PluginPart string

// The pieces of plug-in CA material.
const (
	PartRoot  PluginPart = "root"
	PartCert  PluginPart = "cert"
	PartKey   PluginPart = "key"
	PartChain PluginPart = "chain"
)

// Why plug-in CA material is refused; each comes wrapped in a *PluginError.
var (
	ErrPluginParse       = errors.New("ca: plug-in CA: cannot parse")
	ErrPluginNotCA       = errors.New("ca: plug-in CA: not a CA certificate")
	ErrPluginKeyMismatch = errors.New("ca: plug-in CA: key does not match the CA certificate")
	ErrPluginChain       = errors.New("ca: plug-in CA: does not chain to the root")
	ErrPluginExpired     = errors.New("ca: plug-in CA: not valid now")
	ErrPluginTrustDomain = errors.New("ca: plug-in CA: names another trust domain")
)

// PluginError says which piece of plug-in material is wrong and why.
type PluginError struct {
	Part PluginPart
	Err  error
}

func (e *PluginError) Error() string { return fmt.Sprintf("%s: %v", e.Part, e.Err) }
func (e *PluginError) Unwrap() error { return e.Err }

func pluginErr(part PluginPart, sentinel error, format string, args ...any) error {
	return &PluginError{Part: part, Err: fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)}
}

// PluginMaterial is a plug-in CA as PEM: the root(s), the CA certificate
// certmesh signs with (more certificates after it are read as its chain),
// its key, and optionally its chain (CA certificate first, up to the root).
type PluginMaterial struct {
	Root, Cert, Key, Chain []byte
	TrustDomain            spiffeid.TrustDomain
	Now                    time.Time
}

// ParsePlugin validates plug-in material and makes an Authority of it. The
// CA certificate must be a CA, valid now, issued directly by one of the
// roots (certmesh chains leaves as leaf, CA certificate, root), and match
// the key; a chain, when given, must start with the CA certificate and
// each certificate be issued by the next. A CA certificate that is the root
// itself is not accepted: certmesh would then hold the root key, which a
// plug-in CA is meant to keep away from it.
func ParsePlugin(m PluginMaterial) (*Authority, error) {
	roots, err := ParseCertsPEM(m.Root)
	if err != nil {
		return nil, pluginErr(PartRoot, ErrPluginParse, "%v", err)
	}
	certs, err := ParseCertsPEM(m.Cert)
	if err != nil {
		return nil, pluginErr(PartCert, ErrPluginParse, "%v", err)
	}
	key, err := ParseKeyPEM(m.Key)
	if err != nil {
		return nil, pluginErr(PartKey, ErrPluginParse, "%v", err)
	}
	cert := certs[0]
	if err := checkPluginCert(cert, m); err != nil {
		return nil, err
	}
	if !keysMatch(cert.PublicKey, key) {
		return nil, pluginErr(PartKey, ErrPluginKeyMismatch, "it is not the key of %q", cert.Subject)
	}
	chain := certs
	if len(m.Chain) > 0 {
		if chain, err = ParseCertsPEM(m.Chain); err != nil {
			return nil, pluginErr(PartChain, ErrPluginParse, "%v", err)
		}
		if !chain[0].Equal(cert) {
			return nil, pluginErr(PartChain, ErrPluginChain, "must begin with the CA certificate %q, begins with %q", cert.Subject, chain[0].Subject)
		}
	}
	if err := checkChainOrder(chain); err != nil {
		return nil, err
	}
	root, err := issuingRoot(cert, roots)
	if err != nil {
		return nil, err
	}
	return assemble(authorityID(root), root, nil, cert, key)
}

func checkPluginCert(cert *x509.Certificate, m PluginMaterial) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return pluginErr(PartCert, ErrPluginNotCA, "%q has no CA basic constraint", cert.Subject)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return pluginErr(PartCert, ErrPluginNotCA, "%q may not sign certificates (key usage)", cert.Subject)
	}
	if m.Now.Before(cert.NotBefore) || !m.Now.Before(cert.NotAfter) {
		return pluginErr(PartCert, ErrPluginExpired, "%q is valid from %s to %s", cert.Subject,
			cert.NotBefore.Format(time.RFC3339), cert.NotAfter.Format(time.RFC3339))
	}
	td, err := trustDomainOf(cert.URIs)
	if err != nil {
		return pluginErr(PartCert, ErrPluginTrustDomain, "%v", err)
	}
	if !td.IsZero() && td != m.TrustDomain {
		return pluginErr(PartCert, ErrPluginTrustDomain, "%q is for %q, this server for %q", cert.Subject, td.Name(), m.TrustDomain.Name())
	}
	return nil
}

// checkChainOrder requires each certificate to be issued by the next.
func checkChainOrder(chain []*x509.Certificate) error {
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return pluginErr(PartChain, ErrPluginChain, "certificate %d (%q) is not issued by certificate %d (%q); the order is CA certificate first, root last",
				i+1, chain[i].Subject, i+2, chain[i+1].Subject)
		}
	}
	return nil
}

// issuingRoot is the root of roots that issued cert.
func issuingRoot(cert *x509.Certificate, roots []*x509.Certificate) (*x509.Certificate, error) {
	for _, r := range roots {
		if r.Equal(cert) || bytes.Equal(r.RawSubjectPublicKeyInfo, cert.RawSubjectPublicKeyInfo) {
			return nil, pluginErr(PartCert, ErrPluginChain, "%q is the root itself: plug in a CA certificate issued by the root, not the root", cert.Subject)
		}
	}
	for _, r := range roots {
		if cert.CheckSignatureFrom(r) != nil {
			continue
		}
		if !r.IsCA {
			return nil, pluginErr(PartRoot, ErrPluginNotCA, "%q has no CA basic constraint", r.Subject)
		}
		return r, nil
	}
	return nil, pluginErr(PartCert, ErrPluginChain, "%q (issuer %q) is not issued by any root given (%d); certmesh signs under one CA certificate issued by the root directly",
		cert.Subject, cert.Issuer, len(roots))
}

// PlugOutcome is what Plug did.
type PlugOutcome string

// Outcomes of Plug.
const (
	PlugUnchanged PlugOutcome = "unchanged"
	// PlugIntermediate: the same root, a new CA certificate: it signs at
	// once, the old one is kept for its leaves.
	PlugIntermediate PlugOutcome = "intermediate switched"
	// PlugPrepared: a new root, published now, signing after the overlap
	// and the acknowledgement gate (RotationState.Prepare).
	PlugPrepared PlugOutcome = "prepared"
)

// ErrPluginRetiring: the plugged root is one the CA is retiring.
var ErrPluginRetiring = errors.New("ca: plug-in CA: its root is being retired; plug in a new root")

// Plug rolls a plug-in authority (ParsePlugin) into the CA. Under a root
// the CA already knows, a new CA certificate signs at once (the bundle does
// not change) and the old one is kept until the last leaf it signed has
// expired. A new root enters as prepared: it is in the bundle now and
// signs after the overlap and once the watchers hold it, while the old
// root stays until its last leaf has expired; a prepared root that was
// plugged before and never signed is dropped for it.
func (c *CA) Plug(a *Authority) (PlugOutcome, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Clock.Now()
	if cur := c.authorities[a.ID]; cur != nil {
		return c.plugIntermediate(now, cur, a)
	}
	next := c.state.clone()
	var dropped string
	if prep, ok := next.Prepared(); ok {
		dropped = prep.ID
		next.Authorities = slicesDelete(next.Authorities, prep.ID)
	}
	next, err := next.Prepare(now, a.ID, c.policy)
	if err != nil {
		return "", err
	}
	b := *a
	if b.jwt, err = newJWTKey(c.cfg.Rand); err != nil {
		return "", err
	}
	if err := b.save(c.authoritiesDir()); err != nil {
		return "", err
	}
	if err := c.commit(next, map[string]*Authority{b.ID: &b}); err != nil {
		return "", err
	}
	if dropped != "" {
		c.cfg.Logger.Warn("plug-in CA replaced before it signed: its root leaves the bundle", "authority", dropped)
		_ = os.RemoveAll(filepath.Join(c.authoritiesDir(), dropped))
	}
	prep, _ := next.Prepared()
	c.cfg.Logger.Info("plug-in CA prepared: new root published, signs after the overlap", "authority", b.ID, "activate_at", prep.ActivateAt)
	return PlugPrepared, nil
}

// plugIntermediate switches the CA certificate under a known root. Called
// with c.mu held.
func (c *CA) plugIntermediate(now time.Time, cur, a *Authority) (PlugOutcome, error) {
	if cur.Intermediate.Equal(a.Intermediate) {
		return PlugUnchanged, nil
	}
	for _, s := range c.state.Authorities {
		if s.ID == a.ID && s.Phase == PhaseRetiring {
			return "", fmt.Errorf("%w (authority %s)", ErrPluginRetiring, a.ID)
		}
	}
	b := *a
	b.jwt, b.interName, b.RootKey = cur.jwt, intermediateName(a.Intermediate), cur.RootKey
	if err := b.save(c.authoritiesDir()); err != nil {
		return "", err
	}
	retireAt := now.Add(c.policy.MaxLeafLifetime)
	if cur.Intermediate.NotAfter.Before(retireAt) {
		retireAt = cur.Intermediate.NotAfter
	}
	next, err := c.state.SwitchIntermediate(a.ID, b.interName, retireAt)
	if err != nil {
		return "", err
	}
	if err := c.commit(next, map[string]*Authority{b.ID: &b}); err != nil {
		return "", err
	}
	c.cfg.Logger.Info("plug-in CA certificate switched under the same root", "authority", b.ID, "intermediate", b.interName,
		"not_after", b.Intermediate.NotAfter, "previous_retires_at", retireAt)
	return PlugIntermediate, nil
}

func slicesDelete(as []AuthorityState, id string) []AuthorityState {
	out := make([]AuthorityState, 0, len(as))
	for _, a := range as {
		if a.ID != id {
			out = append(out, a)
		}
	}
	return out
}

// ImportParams is a as the CA's first authority (Config.Import), for a CA
// that has no state yet: it signs at once, there being nothing to overlap.
func (a *Authority) ImportParams() (*ImportParams, error) {
	key, err := EncodeKeyPEM(a.IntermediateKey)
	if err != nil {
		return nil, err
	}
	return &ImportParams{RootPEM: EncodeCertsPEM(a.Root), IntermediatePEM: EncodeCertsPEM(a.Intermediate), IntermediateKeyPEM: key}, nil
}
