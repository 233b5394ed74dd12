package ca

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/ca/store"
)

// JWT-SVIDs are signed with one CA-held ES256 key, published in the JWT
// bundle under a key ID derived from the public key.
const (
	jwtKeyFile     = "jwt.key"
	DefaultJWTTTL  = 5 * time.Minute
	maxJWTAudience = 16
)

// Errors of JWT-SVID signing.
var (
	ErrJWTAudience = errors.New("ca: JWT-SVID needs 1 to 16 non-empty audiences")
)

type jwtAuthority struct {
	kid    string
	key    crypto.Signer
	signer jose.Signer
}

// loadOrCreateJWTKey reads the JWT signing key, creating it on first start.
func (c *CA) loadOrCreateJWTKey() error {
	path := filepath.Join(c.cfg.Dir, jwtKeyFile)
	b, err := os.ReadFile(path)
	var key crypto.Signer
	switch {
	case errors.Is(err, os.ErrNotExist):
		if key, err = GenerateKey(KeyECP256, c.cfg.Rand); err != nil {
			return fmt.Errorf("ca: JWT key: %w", err)
		}
		pemBytes, err := EncodeKeyPEM(key)
		if err != nil {
			return err
		}
		if err := store.WriteFile(path, pemBytes, 0o600); err != nil {
			return fmt.Errorf("ca: JWT key: %w", err)
		}
	case err != nil:
		return fmt.Errorf("ca: JWT key: %w", err)
	default:
		if key, err = ParseKeyPEM(b); err != nil {
			return fmt.Errorf("ca: %s: %w", path, err)
		}
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("ca: JWT key: %w", err)
	}
	sum := sha256.Sum256(der)
	kid := base64.RawURLEncoding.EncodeToString(sum[:12])
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return fmt.Errorf("ca: JWT signer: %w", err)
	}
	c.jwt.Store(&jwtAuthority{kid: kid, key: key, signer: signer})
	return nil
}

// JWTBundle is the JWT trust bundle: the public keys JWT-SVIDs are signed with.
func (c *CA) JWTBundle() *jwtbundle.Bundle {
	j := c.jwt.Load()
	return jwtbundle.FromJWTAuthorities(c.cfg.TrustDomain, map[string]crypto.PublicKey{j.kid: j.key.Public()})
}

// JWTParams is one JWT-SVID to sign.
type JWTParams struct {
	ID       spiffeid.ID
	Audience []string
	TTL      time.Duration // zero: DefaultJWTTTL; clamped to MaxTTL
}

// SignJWT issues a JWT-SVID (sub, aud, exp, iat) for an already authorized ID.
func (c *CA) SignJWT(p JWTParams) (string, time.Time, error) {
	if !p.ID.MemberOf(c.cfg.TrustDomain) {
		return "", time.Time{}, fmt.Errorf("%w: %s", ErrForeignID, p.ID)
	}
	if len(p.Audience) == 0 || len(p.Audience) > maxJWTAudience {
		return "", time.Time{}, ErrJWTAudience
	}
	for _, a := range p.Audience {
		if a == "" {
			return "", time.Time{}, ErrJWTAudience
		}
	}
	ttl := p.TTL
	switch {
	case ttl == 0:
		ttl = DefaultJWTTTL
	case ttl < 0:
		return "", time.Time{}, ErrBadTTL
	case ttl > c.cfg.MaxTTL:
		ttl = c.cfg.MaxTTL
	}
	now := c.cfg.Clock.Now()
	exp := now.Add(ttl)
	claims := jwt.Claims{
		Subject:  p.ID.String(),
		Audience: jwt.Audience(p.Audience),
		Expiry:   jwt.NewNumericDate(exp),
		IssuedAt: jwt.NewNumericDate(now),
	}
	token, err := jwt.Signed(c.jwt.Load().signer).Claims(claims).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("ca: sign JWT: %w", err)
	}
	return token, exp, nil
}
