package ca_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
)

var jwtID = spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")

// served is the JWT bundle as an agent receives it: the JWKS the CA's
// FetchJWTBundles sends, parsed back.
func served(t *testing.T, c *catest.CA) *jwtbundle.Bundle {
	t.Helper()
	jwks, err := c.JWTBundle().Marshal()
	require.NoError(t, err)
	b, err := jwtbundle.Parse(td, jwks)
	require.NoError(t, err)
	return b
}

// validateAt checks token as a workload does (key by kid from the bundle,
// signature, audience, expiry), at the fake clock's now rather than the wall
// clock's, and returns the key ID it was signed with.
func validateAt(token string, b *jwtbundle.Bundle, now time.Time) (string, error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return "", err
	}
	kid := tok.Headers[0].KeyID
	key, ok := b.FindJWTAuthority(kid)
	if !ok {
		return kid, os.ErrNotExist
	}
	var claims jwt.Claims
	if err := tok.Claims(key, &claims); err != nil {
		return kid, err
	}
	return kid, claims.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{"db"}, Time: now}, 0)
}

func signJWT(t *testing.T, c *catest.CA, ttl time.Duration) (token, kid string) {
	t.Helper()
	token, _, err := c.SignJWT(ca.JWTParams{ID: jwtID, Audience: []string{"db"}, TTL: ttl})
	require.NoError(t, err)
	kid, err = validateAt(token, served(t, c), c.Clock.Now())
	require.NoError(t, err)
	return token, kid
}

// TestJWTKeyRotatesWithTheCA walks a rotation with a fake clock: the new key
// is published at Rotate, signs from the switch, and the old key leaves the
// JWKS only after the last token it signed has expired.
func TestJWTKeyRotatesWithTheCA(t *testing.T) {
	c := catest.New(t, "example.org", func(cfg *ca.Config) {
		cfg.RotationOverlap = time.Hour
		cfg.MaxTTL = 2 * time.Hour
	})
	oldToken, oldKid := signJWT(t, c, 2*time.Hour)
	require.Len(t, served(t, c).JWTAuthorities(), 1)
	require.Equal(t, oldKid, c.Status().Authorities[0].JWTKeyID)

	prep, err := c.Rotate()
	require.NoError(t, err)
	st := c.Status()
	require.Equal(t, prep.ID, st.Authorities[1].ID)
	newKid := st.Authorities[1].JWTKeyID
	require.NotEmpty(t, newKid)
	require.NotEqual(t, oldKid, newKid, "key IDs are distinct per key")
	jwks := served(t, c).JWTAuthorities()
	require.Len(t, jwks, 2, "the new key is published at once")
	require.Contains(t, jwks, oldKid)
	require.Contains(t, jwks, newKid)
	keyFile := filepath.Join(c.Dir, "authorities", prep.ID, "jwt.key")
	info, err := os.Stat(keyFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	_, kid := signJWT(t, c, 0)
	require.Equal(t, oldKid, kid, "a prepared key does not sign")

	c.Clock.Step(time.Hour)
	require.NoError(t, c.Advance())
	newToken, kid := signJWT(t, c, 2*time.Hour)
	require.Equal(t, newKid, kid, "the active authority's key signs after the switch")
	c.Clock.Step(time.Hour - time.Second) // the old token's last second
	for _, tok := range []string{oldToken, newToken} {
		_, err := validateAt(tok, served(t, c), c.Clock.Now())
		require.NoError(t, err, "tokens of both keys validate through the overlap")
	}
	require.NoError(t, c.Advance())
	require.Len(t, served(t, c).JWTAuthorities(), 2, "the old key stays while its tokens can live")

	// Retirement: switch + MaxTTL + backdate.
	c.Clock.Step(time.Hour + 5*time.Minute + time.Second)
	require.NoError(t, c.Advance())
	jwks = served(t, c).JWTAuthorities()
	require.Len(t, jwks, 1, "the old key left with its authority")
	require.Contains(t, jwks, newKid)
	_, err = validateAt(oldToken, served(t, c), c.Clock.Now())
	require.Error(t, err)
	_, kid = signJWT(t, c, 0)
	require.Equal(t, newKid, kid)

	reloaded, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock})
	require.NoError(t, err)
	require.True(t, c.JWTBundle().Equal(reloaded.JWTBundle()), "JWT keys persist with their authorities")
}

// legacyDir turns a fresh CA directory into one from before per-authority
// JWT keys: the authority's jwt.key becomes the top-level one.
func legacyDir(t *testing.T, c *catest.CA) (legacyPath string, pem []byte) {
	t.Helper()
	own := filepath.Join(c.Dir, "authorities", c.Status().Authorities[0].ID, "jwt.key")
	pem, err := os.ReadFile(own)
	require.NoError(t, err)
	legacyPath = filepath.Join(c.Dir, "jwt.key")
	require.NoError(t, os.Rename(own, legacyPath))
	return legacyPath, pem
}

// TestLegacyJWTKeyLoadsAndMigratesOnRotate: a directory with one top-level
// jwt.key keeps signing with it; the first rotation moves it into its
// authority and the new authority brings its own.
func TestLegacyJWTKeyLoadsAndMigratesOnRotate(t *testing.T) {
	c := catest.New(t, "example.org", func(cfg *ca.Config) { cfg.RotationOverlap = time.Hour })
	legacyPath, pem := legacyDir(t, c)
	old, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock, RotationOverlap: time.Hour})
	require.NoError(t, err)
	c.CA = old
	_, legacyKid := signJWT(t, c, 0)
	require.Len(t, served(t, c).JWTAuthorities(), 1)
	files, err := c.ExportFiles()
	require.NoError(t, err)
	require.Contains(t, files, "jwt.key")
	require.Len(t, files, 6, "nothing written on load: state, root and intermediate with keys, jwt.key")

	_, err = c.Rotate()
	require.NoError(t, err)
	require.NoFileExists(t, legacyPath, "migrated on the first rotation")
	oldID := c.Status().Authorities[0].ID
	moved := filepath.Join(c.Dir, "authorities", oldID, "jwt.key")
	got, err := os.ReadFile(moved)
	require.NoError(t, err)
	require.Equal(t, pem, got)
	info, err := os.Stat(moved)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	require.Len(t, served(t, c).JWTAuthorities(), 2)
	_, kid := signJWT(t, c, 0)
	require.Equal(t, legacyKid, kid, "the same key signs until the switch")

	reloaded, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock})
	require.NoError(t, err)
	require.True(t, c.JWTBundle().Equal(reloaded.JWTBundle()))
}

// TestCorruptJWTKeyStopsTheStart: a corrupt JWT key, top-level or an
// authority's, is an error naming the file, and is left as it was.
func TestCorruptJWTKeyStopsTheStart(t *testing.T) {
	garbage := []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
	for _, legacy := range []bool{false, true} {
		t.Run(map[bool]string{false: "authority", true: "legacy"}[legacy], func(t *testing.T) {
			c := catest.New(t, "example.org")
			path := filepath.Join(c.Dir, "authorities", c.Status().Authorities[0].ID, "jwt.key")
			if legacy {
				path, _ = legacyDir(t, c)
			}
			require.NoError(t, os.WriteFile(path, garbage, 0o600))
			_, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock})
			require.ErrorIs(t, err, ca.ErrBadKeyFile)
			require.ErrorContains(t, err, path)
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, garbage, after)
		})
	}
}

// TestRestoreRemovesMigratedLegacyKey: a replica that still holds the
// top-level jwt.key drops it when it restores the leader's migrated files.
func TestRestoreRemovesMigratedLegacyKey(t *testing.T) {
	leader := catest.New(t, "example.org")
	_, err := leader.Rotate()
	require.NoError(t, err)
	files, err := leader.ExportFiles()
	require.NoError(t, err)

	follower := catest.New(t, "example.org")
	legacyPath, _ := legacyDir(t, follower)
	require.NoError(t, follower.Restore(files))
	require.NoFileExists(t, legacyPath)
	require.True(t, leader.JWTBundle().Equal(follower.JWTBundle()))
	got, err := follower.ExportFiles()
	require.NoError(t, err)
	require.Equal(t, files, got)
}
