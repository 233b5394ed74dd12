package ca

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// JWT-SVIDs are signed with an ES256 key that belongs to an authority
// (authorities/<id>/jwt.key) and so shares its life: a prepared authority's
// key is in the JWT bundle before it signs, the active one signs, and a
// retiring one's key stays in the bundle until its RetireAt, by which time
// the last token it signed (at most MaxTTL) has expired. Each key is
// published under a key ID derived from its public key.
//
// Directories from before per-authority keys hold one jwt.key at the top.
// Authorities without a key of their own use it; the first rotation copies
// it into each of them and removes it (migrateLegacyJWTKey).
const (
	jwtKeyFile     = "jwt.key"
	DefaultJWTTTL  = 5 * time.Minute
	maxJWTAudience = 16
)

// Errors of JWT-SVID signing.
var (
	ErrJWTAudience = errors.New("ca: JWT-SVID needs 1 to 16 non-empty audiences")
)

// jwtKey is one JWT signing key with its key ID.
type jwtKey struct {
	kid    string
	key    crypto.Signer
	signer jose.Signer
}

// jwtSnapshot is what JWT signing and the JWT bundle read, swapped
// atomically with the X.509 bundle on every state change.
type jwtSnapshot struct {
	signing *jwtKey
	bundle  *jwtbundle.Bundle
}

func newJWTKey(rnd io.Reader) (*jwtKey, error) {
	key, err := GenerateKey(KeyECP256, rnd)
	if err != nil {
		return nil, fmt.Errorf("ca: JWT key: %w", err)
	}
	return jwtKeyFrom(key)
}

func jwtKeyFrom(key crypto.Signer) (*jwtKey, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("ca: JWT key: %w", err)
	}
	sum := sha256.Sum256(der)
	kid := base64.RawURLEncoding.EncodeToString(sum[:12])
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("%w: JWT key must be ECDSA P-256: %v", ErrBadKeyFile, err)
	}
	return &jwtKey{kid: kid, key: key, signer: signer}, nil
}

// readJWTKey reads a JWT key file; a missing file is (nil, nil) and a corrupt
// one an error naming it.
func readJWTKey(path string) (*jwtKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ca: JWT key: %w", err)
	}
	key, err := ParseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	k, err := jwtKeyFrom(key)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	return k, nil
}

// jwtKeyOf is the key authority id signs JWT-SVIDs with: its own, else the
// legacy shared one.
func (c *CA) jwtKeyOf(id string) *jwtKey {
	if a := c.authorities[id]; a != nil && a.jwt != nil {
		return a.jwt
	}
	return c.legacyJWT
}

// loadJWTKeys reads the legacy jwt.key, if any, after the authorities (with
// their own keys) are loaded. Without one, an authority that has no key of
// its own gets one, so every authority that can sign has a key. It returns
// the legacy key for the caller to install.
func (c *CA) loadJWTKeys(state RotationState) (*jwtKey, error) {
	legacy, err := readJWTKey(filepath.Join(c.cfg.Dir, jwtKeyFile))
	if err != nil || legacy != nil {
		return legacy, err
	}
	for _, s := range state.Authorities {
		if a := c.authorities[s.ID]; a.jwt == nil {
			if err := c.giveJWTKey(a); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}

// giveJWTKey creates a's JWT key and writes it into a's directory.
func (c *CA) giveJWTKey(a *Authority) error {
	k, err := newJWTKey(c.cfg.Rand)
	if err != nil {
		return err
	}
	if err := a.saveJWTKey(c.authoritiesDir(), k); err != nil {
		return err
	}
	a.jwt = k
	return nil
}

// migrateLegacyJWTKey ends the shared jwt.key: every authority still using it
// gets a copy in its own directory (written first, so a crash leaves the key
// in both places, never in none), then the shared file is removed. Rotate
// calls it before preparing a new authority. Callers hold c.mu.
func (c *CA) migrateLegacyJWTKey() error {
	if c.legacyJWT == nil {
		return nil
	}
	for _, a := range c.authorities {
		if a.jwt != nil {
			continue
		}
		if err := a.saveJWTKey(c.authoritiesDir(), c.legacyJWT); err != nil {
			return fmt.Errorf("ca: migrate %s: %w", jwtKeyFile, err)
		}
		a.jwt = c.legacyJWT
	}
	if err := os.Remove(filepath.Join(c.cfg.Dir, jwtKeyFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ca: migrate %s: %w", jwtKeyFile, err)
	}
	c.legacyJWT = nil
	c.cfg.Logger.Info("JWT key moved into its authority; it now rotates with the CA", "kid", c.jwtKeyOf(c.active.Load().ID).kid)
	return nil
}

func (c *CA) newJWTSnapshot(state RotationState) *jwtSnapshot {
	keys := map[string]crypto.PublicKey{}
	var signing *jwtKey
	for _, s := range state.Authorities {
		k := c.jwtKeyOf(s.ID)
		if k == nil {
			continue
		}
		keys[k.kid] = k.key.Public()
		if s.Phase == PhaseActive {
			signing = k
		}
	}
	return &jwtSnapshot{signing: signing, bundle: jwtbundle.FromJWTAuthorities(c.cfg.TrustDomain, keys)}
}

// JWTBundle is the JWT trust bundle: the public key of every authority in
// the rotation, so tokens of the old and the new key both validate.
func (c *CA) JWTBundle() *jwtbundle.Bundle { return c.jwt.Load().bundle }

// JWTParams is one JWT-SVID to sign.
type JWTParams struct {
	ID       spiffeid.ID
	Audience []string
	TTL      time.Duration // zero: DefaultJWTTTL; clamped to MaxTTL
}

// SignJWT issues a JWT-SVID (sub, aud, exp, iat) for an already authorized
// ID, with the active authority's key.
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
		ttl = c.cfg.MaxTTL // so a retiring key outlives every token it signed
	}
	now := c.cfg.Clock.Now()
	exp := now.Add(ttl)
	claims := jwt.Claims{
		Subject:  p.ID.String(),
		Audience: jwt.Audience(p.Audience),
		Expiry:   jwt.NewNumericDate(exp),
		IssuedAt: jwt.NewNumericDate(now),
	}
	token, err := jwt.Signed(c.jwt.Load().signing.signer).Claims(claims).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("ca: sign JWT: %w", err)
	}
	return token, exp, nil
}
