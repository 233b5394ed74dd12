package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// SignParams is one leaf to sign. The identity has already been proven and
// authorized by the caller of Sign (the gRPC service, or dev mode in-process).
type SignParams struct {
	PublicKey crypto.PublicKey
	ID        spiffeid.ID
	DNSNames  []string
	// IPAddresses are only for the CA's own serving certificate.
	IPAddresses []net.IP
	// TTL requested; zero means the default, more than the maximum is
	// clamped, and less than MinTTL (or negative) is refused.
	TTL time.Duration
}

// Errors returned by Sign for requests that cannot be honoured.
var (
	ErrBadTTL           = errors.New("ca: TTL must be at least 1m")
	ErrForeignID        = errors.New("ca: SPIFFE ID is outside the CA's trust domain")
	ErrUnsupportedKey   = errors.New("ca: unsupported public key")
	ErrWeakKey          = errors.New("ca: RSA key shorter than 2048 bits")
	ErrAuthorityExpired = errors.New("ca: signing authority has expired")
)

// Leaf is a signed X.509-SVID and the chain that proves it.
type Leaf struct {
	// NotAfter and Serial are kept from the template so that callers need
	// not parse the certificate again; Certificate() parses on demand.
	NotAfter time.Time
	Serial   *big.Int
	// Chain is DER, leaf first, then the intermediate, then the root: the
	// order istio's CreateCertificate answers with.
	Chain [][]byte
	// afterLeafPEM is the authority's PEM of Chain[1:], shared by its leaves.
	afterLeafPEM []string
}

// ChainPEM is Chain as PEM CERTIFICATE blocks, leaf first. Only the leaf is
// encoded here; the intermediate and root come from the authority, encoded once.
func (l *Leaf) ChainPEM() []string {
	out := make([]string, len(l.Chain))
	for i, der := range l.Chain {
		if i > 0 && len(l.afterLeafPEM) == len(l.Chain)-1 {
			out[i] = l.afterLeafPEM[i-1]
			continue
		}
		out[i] = certPEM(der)
	}
	return out
}

func certPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// Sign issues an X.509-SVID: one URI SAN, not a CA, digitalSignature (plus
// keyEncipherment for RSA keys), serverAuth+clientAuth, backdated for clock
// skew and never outliving its intermediate.
func (c *CA) Sign(p SignParams) (*Leaf, error) {
	if !p.ID.MemberOf(c.cfg.TrustDomain) {
		return nil, fmt.Errorf("%w: %s", ErrForeignID, p.ID)
	}
	ttl, err := c.clampTTL(p.TTL)
	if err != nil {
		return nil, err
	}
	usage, err := keyUsageFor(p.PublicKey)
	if err != nil {
		return nil, err
	}
	a := c.active.Load()
	now := c.cfg.Clock.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(a.Intermediate.NotAfter) {
		notAfter = a.Intermediate.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("%w: intermediate %s ended %v", ErrAuthorityExpired, a.ID, a.Intermediate.NotAfter)
	}
	serial, err := newSerial(c.cfg.Rand)
	if err != nil {
		return nil, err
	}
	// The template (see leafFields.template) is the same whichever path
	// createLeaf takes.
	fields := &leafFields{
		Serial:      serial,
		NotBefore:   now.Add(-LeafBackdate),
		NotAfter:    notAfter,
		KeyUsage:    usage,
		URI:         p.ID.URL(),
		DNSNames:    p.DNSNames,
		IPAddresses: p.IPAddresses,
		PublicKey:   p.PublicKey,
	}
	der, err := createLeaf(c.cfg.Rand, fields, a)
	if err != nil {
		return nil, fmt.Errorf("ca: sign %s: %w", p.ID, err)
	}
	chain := make([][]byte, 0, 3)
	chain = append(chain, der)
	chain = append(chain, a.chainAfterLeaf...)
	return &Leaf{NotAfter: notAfter, Serial: serial, Chain: chain, afterLeafPEM: a.chainAfterLeafPEM}, nil
}

// Certificate parses the leaf certificate.
func (l *Leaf) Certificate() (*x509.Certificate, error) { return x509.ParseCertificate(l.Chain[0]) }

func (c *CA) clampTTL(ttl time.Duration) (time.Duration, error) {
	switch {
	case ttl == 0:
		return c.cfg.DefaultTTL, nil
	case ttl < MinTTL:
		return 0, fmt.Errorf("%w (asked for %v)", ErrBadTTL, ttl)
	case ttl > c.cfg.MaxTTL:
		return c.cfg.MaxTTL, nil
	}
	return ttl, nil
}

// keyUsageFor follows the X509-SVID spec: digitalSignature always,
// keyEncipherment only where the key can encipher (RSA).
func keyUsageFor(pub crypto.PublicKey) (x509.KeyUsage, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil {
			break
		}
		return x509.KeyUsageDigitalSignature, nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			break
		}
		return x509.KeyUsageDigitalSignature, nil
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			break
		}
		if k.N.BitLen() < 2048 {
			return 0, fmt.Errorf("%w (%d bits)", ErrWeakKey, k.N.BitLen())
		}
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, nil
	}
	return 0, fmt.Errorf("%w %T", ErrUnsupportedKey, pub)
}

// secondsToDuration converts a requested validity in seconds without
// overflowing: absurd values become the maximum and are clamped later.
func secondsToDuration(s int64) time.Duration {
	const maxSeconds = int64(1<<63-1) / int64(time.Second)
	if s > maxSeconds {
		return time.Duration(1<<63 - 1)
	}
	if s < -maxSeconds {
		return -time.Duration(1<<63 - 1)
	}
	return time.Duration(s) * time.Second
}
