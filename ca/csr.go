package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Errors for certificate requests that cannot be accepted. Each is a distinct
// refusal reason in logs and metrics.
var (
	ErrCSRNotPEM        = errors.New("ca: CSR is not PEM")
	ErrCSRMalformed     = errors.New("ca: CSR does not parse")
	ErrCSRSignature     = errors.New("ca: CSR signature is invalid")
	ErrCSRCurve         = errors.New("ca: CSR key uses a curve certmesh does not accept")
	ErrCSRIdentity      = errors.New("ca: CSR asks for an identity the caller does not have")
	ErrCSRDNSNotAllowed = errors.New("ca: CSR asks for a DNS name the caller may not claim")
	ErrCSRTooLarge      = errors.New("ca: CSR is too large")
	ErrCSRTooManySANs   = errors.New("ca: CSR has too many SANs")
	ErrCSRRSAKey        = errors.New("ca: CSR RSA key is outside 2048-4096 bits with exponent 65537")
)

// Limits that keep a hostile CSR from costing more than a normal one.
// The RSA bounds are checked before the self-signature: verifying with a
// 185,000-bit modulus cost 2.2 s of CPU, so the key must be sized first.
const (
	MaxCSRBytes   = 64 << 10
	MaxCSRSANs    = 100
	MinCSRRSABits = 2048
	MaxCSRRSABits = 4096
	CSRRSAExp     = 65537
)

// ParseCSR decodes a PEM CSR and checks its self-signature and key. The
// subject and SANs are not trusted here; AuthorizeCSR decides about them.
func ParseCSR(pemBytes []byte) (*x509.CertificateRequest, error) {
	if len(pemBytes) > MaxCSRBytes {
		return nil, fmt.Errorf("%w (%d bytes, limit %d)", ErrCSRTooLarge, len(pemBytes), MaxCSRBytes)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, ErrCSRNotPEM
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCSRMalformed, err)
	}
	if n := len(csr.URIs) + len(csr.DNSNames) + len(csr.IPAddresses) + len(csr.EmailAddresses); n > MaxCSRSANs {
		return nil, fmt.Errorf("%w (%d, limit %d)", ErrCSRTooManySANs, n, MaxCSRSANs)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: %s", ErrCSRCurve, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if err := checkRSAKey(k); err != nil {
			return nil, err
		}
	default:
		if _, err := keyUsageFor(csr.PublicKey); err != nil {
			return nil, err
		}
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCSRSignature, err)
	}
	return csr, nil
}

// checkRSAKey admits the RSA keys workloads use (Istio's agents send 2048
// bits) and nothing whose signature check could cost more than theirs.
func checkRSAKey(k *rsa.PublicKey) error {
	switch bits := k.N.BitLen(); {
	case bits < MinCSRRSABits:
		return fmt.Errorf("%w (%d bits)", ErrWeakKey, bits)
	case bits > MaxCSRRSABits:
		return fmt.Errorf("%w (%d bits)", ErrCSRRSAKey, bits)
	case k.E != CSRRSAExp:
		return fmt.Errorf("%w (exponent %d)", ErrCSRRSAKey, k.E)
	}
	return nil
}

// CSRGrant is what an authenticated caller may receive.
type CSRGrant struct {
	ID         spiffeid.ID
	AllowedDNS []string
}

// AuthorizeCSR checks a parsed CSR against what the caller proved and returns
// what to sign. A URI SAN must be the caller's own ID (or absent); DNS SANs
// must each be allowed. With no DNS SANs in the CSR, every allowed name is
// issued, as a registration that lists names intends.
func AuthorizeCSR(csr *x509.CertificateRequest, g CSRGrant, ttl int64) (SignParams, error) {
	for _, u := range csr.URIs {
		if u.String() != g.ID.String() {
			return SignParams{}, fmt.Errorf("%w: CSR asks for %q, caller is %q", ErrCSRIdentity, u.String(), g.ID)
		}
	}
	if len(csr.URIs) > 1 {
		return SignParams{}, fmt.Errorf("%w: more than one URI SAN", ErrCSRIdentity)
	}
	if len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 {
		return SignParams{}, fmt.Errorf("%w: IP or email SANs are not issued", ErrCSRIdentity)
	}
	dns := g.AllowedDNS
	if len(csr.DNSNames) > 0 {
		for _, n := range csr.DNSNames {
			if !slices.Contains(g.AllowedDNS, n) {
				return SignParams{}, fmt.Errorf("%w: %q for %s", ErrCSRDNSNotAllowed, n, g.ID)
			}
		}
		dns = csr.DNSNames
	}
	return SignParams{PublicKey: csr.PublicKey, ID: g.ID, DNSNames: dns, TTL: secondsToDuration(ttl)}, nil
}
