package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func TestNewCreatesAndReloadsTheSameCA(t *testing.T) {
	c := catest.New(t, "example.org")
	first := c.BundlePEM()
	again, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock})
	require.NoError(t, err)
	require.Equal(t, first, again.BundlePEM(), "a restart must reuse the CA")

	var keys int
	require.NoError(t, filepath.Walk(c.Dir, func(p string, info os.FileInfo, err error) error {
		require.NoError(t, err)
		if filepath.Ext(p) == ".key" {
			keys++
			require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), p)
		}
		return nil
	}))
	require.Equal(t, 3, keys, "root, intermediate and JWT keys")
}

func TestKeyTypes(t *testing.T) {
	for _, kt := range []ca.KeyType{ca.KeyECP256, ca.KeyECP384, ca.KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			c := catest.New(t, "example.org", func(cfg *ca.Config) { cfg.KeyType = kt })
			svid := c.SVID(t, "spiffe://example.org/ns/default/sa/web", time.Hour)
			_, _, err := x509svid.Verify(svid.Certificates, c.Bundle())
			require.NoError(t, err)
		})
	}
	_, err := ca.ParseKeyType("dsa-1024")
	require.ErrorIs(t, err, ca.ErrUnknownKeyType)
}

func TestCorruptKeyFileIsAClearErrorAndIsNotOverwritten(t *testing.T) {
	c := catest.New(t, "example.org")
	st := c.Status()
	keyPath := filepath.Join(c.Dir, "authorities", st.Authorities[0].ID, "intermediate.key")
	garbage := []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
	require.NoError(t, os.WriteFile(keyPath, garbage, 0o600))

	_, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock})
	require.ErrorIs(t, err, ca.ErrBadKeyFile)
	require.ErrorContains(t, err, keyPath)
	after, rerr := os.ReadFile(keyPath)
	require.NoError(t, rerr)
	require.Equal(t, garbage, after)
}

func TestCorruptStateFile(t *testing.T) {
	c := catest.New(t, "example.org")
	require.NoError(t, os.WriteFile(filepath.Join(c.Dir, "state.json"), []byte("{"), 0o644))
	_, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock})
	require.ErrorContains(t, err, "state.json is corrupt")
}

func TestImportBringYourOwnCA(t *testing.T) {
	enterprise := catest.New(t, "corp.example")
	st := enterprise.Status()
	d := filepath.Join(enterprise.Dir, "authorities", st.Authorities[0].ID)
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(d, name))
		require.NoError(t, err)
		return b
	}
	imp := &ca.ImportParams{RootPEM: read("root.crt"), IntermediatePEM: read("intermediate.crt"), IntermediateKeyPEM: read("intermediate.key")}
	c := catest.New(t, "example.org", func(cfg *ca.Config) { cfg.Import = imp })
	require.Equal(t, enterprise.BundlePEM(), c.BundlePEM())
	require.False(t, c.Status().Authorities[0].HasRootKey, "a BYO root key never enters certmesh")
	svid := c.SVID(t, "spiffe://example.org/vm/a", time.Hour)
	_, _, err := x509svid.Verify(svid.Certificates, c.Bundle())
	require.NoError(t, err)

	t.Run("mismatched key", func(t *testing.T) {
		other := catest.New(t, "corp.example")
		od := filepath.Join(other.Dir, "authorities", other.Status().Authorities[0].ID)
		key, err := os.ReadFile(filepath.Join(od, "intermediate.key"))
		require.NoError(t, err)
		bad := *imp
		bad.IntermediateKeyPEM = key
		_, err = ca.ImportAuthority(bad)
		require.ErrorIs(t, err, ca.ErrBadAuthority)
	})
}

func TestSignConformsToX509SVID(t *testing.T) {
	c := catest.New(t, "example.org")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	id := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	leaf, err := c.Sign(ca.SignParams{PublicKey: key.Public(), ID: id, DNSNames: []string{"web.default.svc"}})
	require.NoError(t, err)

	cert, err := leaf.Certificate()
	require.NoError(t, err)
	require.Len(t, cert.URIs, 1)
	require.Equal(t, id.String(), cert.URIs[0].String())
	require.False(t, cert.IsCA)
	require.Equal(t, x509.KeyUsageDigitalSignature, cert.KeyUsage)
	require.ElementsMatch(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, cert.ExtKeyUsage)
	require.Equal(t, []string{"web.default.svc"}, cert.DNSNames)
	now := c.Clock.Now()
	require.Equal(t, now.Add(time.Hour).Unix(), cert.NotAfter.Unix(), "default TTL is 1h")
	require.True(t, cert.NotBefore.Before(now.Add(-time.Minute)), "backdated for clock skew")
	require.Len(t, leaf.Chain, 3, "leaf, intermediate, root")

	var pemChain []byte
	for _, der := range leaf.Chain[:2] {
		pemChain = append(pemChain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	gotID, _, err := x509svid.ParseAndVerify(leaf.Chain[:2], c.Bundle())
	require.NoError(t, err)
	require.Equal(t, id, gotID)
	_, err = x509svid.Parse(pemChain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	require.NoError(t, err)
}

func TestSignRSAKeyGetsKeyEncipherment(t *testing.T) {
	c := catest.New(t, "example.org")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	leaf, err := c.Sign(ca.SignParams{PublicKey: key.Public(), ID: spiffeid.RequireFromString("spiffe://example.org/a")})
	require.NoError(t, err)
	cert, err := leaf.Certificate()
	require.NoError(t, err)
	require.Equal(t, x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment, cert.KeyUsage)
}

func TestSignTTL(t *testing.T) {
	c := catest.New(t, "example.org", func(cfg *ca.Config) { cfg.MaxTTL = 2 * time.Hour })
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	id := spiffeid.RequireFromString("spiffe://example.org/a")
	tests := []struct {
		name    string
		ttl     time.Duration
		want    time.Duration
		wantErr error
	}{
		{name: "default", ttl: 0, want: time.Hour},
		{name: "within range", ttl: 10 * time.Minute, want: 10 * time.Minute},
		{name: "clamped to max", ttl: 100 * time.Hour, want: 2 * time.Hour},
		{name: "below minimum", ttl: 30 * time.Second, wantErr: ca.ErrBadTTL},
		{name: "negative", ttl: -time.Hour, wantErr: ca.ErrBadTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf, err := c.Sign(ca.SignParams{PublicKey: key.Public(), ID: id, TTL: tt.ttl})
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.Clock.Now().Add(tt.want).Unix(), leaf.NotAfter.Unix())
		})
	}
}

func TestSignRefusesForeignID(t *testing.T) {
	c := catest.New(t, "example.org")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	_, err = c.Sign(ca.SignParams{PublicKey: key.Public(), ID: spiffeid.RequireFromString("spiffe://other.org/a")})
	require.ErrorIs(t, err, ca.ErrForeignID)
}

func TestLeafNeverOutlivesIntermediate(t *testing.T) {
	c := catest.New(t, "example.org", func(cfg *ca.Config) { cfg.MaxTTL = 48 * time.Hour })
	end := c.Status().Authorities[0].IntermediateEnd
	c.Clock.SetTime(end.Add(-time.Hour))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leaf, err := c.Sign(ca.SignParams{PublicKey: key.Public(), ID: spiffeid.RequireFromString("spiffe://example.org/a"), TTL: 48 * time.Hour})
	require.NoError(t, err)
	require.Equal(t, end, leaf.NotAfter)

	c.Clock.SetTime(end.Add(time.Second))
	_, err = c.Sign(ca.SignParams{PublicKey: key.Public(), ID: spiffeid.RequireFromString("spiffe://example.org/a")})
	require.ErrorIs(t, err, ca.ErrAuthorityExpired)
}

// TestOpenSSLVerifiesSVID checks the chain with the openssl CLI, an
// independent X.509 implementation.
func TestOpenSSLVerifiesSVID(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	require.NoError(t, err, "openssl is installed by test/tools/install.sh")
	c := catest.New(t, "example.org")
	svid := c.SVID(t, "spiffe://example.org/ns/default/sa/web", time.Hour)
	dir := t.TempDir()
	write := func(name string, certs ...*x509.Certificate) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, ca.EncodeCertsPEM(certs...), 0o644))
		return p
	}
	leaf := write("leaf.pem", svid.Certificates[0])
	inter := write("inter.pem", svid.Certificates[1:]...)
	bundle := filepath.Join(dir, "bundle.pem")
	require.NoError(t, os.WriteFile(bundle, c.BundlePEM(), 0o644))
	// openssl verify checks against the real time, so the fake clock's epoch must be in the past.
	require.True(t, catest.Epoch.Before(time.Now()))
	out, err := exec.Command(openssl, "verify", "-CAfile", bundle, "-untrusted", inter, "-attime",
		strconv.FormatInt(c.Clock.Now().Unix(), 10), "-purpose", "sslclient", leaf).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "OK")

	other := catest.New(t, "example.org")
	otherBundle := filepath.Join(dir, "other.pem")
	require.NoError(t, os.WriteFile(otherBundle, other.BundlePEM(), 0o644))
	out, err = exec.Command(openssl, "verify", "-CAfile", otherBundle, "-untrusted", inter, "-attime", strconv.FormatInt(c.Clock.Now().Unix(), 10), leaf).CombinedOutput()
	require.Error(t, err, "a leaf must not verify against another CA: %s", out)
}

func TestTrustDomainMismatchRefused(t *testing.T) {
	c := catest.New(t, "example.org")
	_, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: spiffeid.RequireTrustDomainFromString("other.org"), Clock: c.Clock})
	require.ErrorIs(t, err, ca.ErrTrustDomainMismatch)
}

func TestReadSnapshotWithoutLock(t *testing.T) {
	c := catest.New(t, "example.org")
	snap, err := ca.ReadSnapshot(c.Dir)
	require.NoError(t, err)
	require.Equal(t, td, snap.TrustDomain)
	require.Equal(t, c.BundlePEM(), snap.BundlePEM())
	_, err = ca.ReadSnapshot(t.TempDir())
	require.ErrorIs(t, err, ca.ErrNoCA)
}

func TestSignJWT(t *testing.T) {
	c := catest.New(t, "example.org")
	id := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	token, exp, err := c.SignJWT(ca.JWTParams{ID: id, Audience: []string{"db"}})
	require.NoError(t, err)
	require.Equal(t, c.Clock.Now().Add(ca.DefaultJWTTTL), exp)
	svid, err := jwtsvid.ParseAndValidate(token, c.JWTBundle(), []string{"db"})
	require.NoError(t, err)
	require.Equal(t, id, svid.ID)
	_, err = jwtsvid.ParseAndValidate(token, c.JWTBundle(), []string{"other"})
	require.Error(t, err, "wrong audience")
	_, _, err = c.SignJWT(ca.JWTParams{ID: id})
	require.ErrorIs(t, err, ca.ErrJWTAudience)

	again, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock})
	require.NoError(t, err)
	require.True(t, c.JWTBundle().Equal(again.JWTBundle()), "JWT key persists")
}

// TestLeafChainPEM: the PEM chain (the authority's part encoded once) is the
// DER chain block for block, and a Leaf built by hand still encodes.
func TestLeafChainPEM(t *testing.T) {
	c := catest.New(t, "example.org")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leaf, err := c.Sign(ca.SignParams{PublicKey: key.Public(), ID: spiffeid.RequireFromString("spiffe://example.org/a")})
	require.NoError(t, err)
	bare := &ca.Leaf{Chain: leaf.Chain}
	for _, l := range []*ca.Leaf{leaf, bare} {
		got := l.ChainPEM()
		require.Len(t, got, len(leaf.Chain))
		for i, der := range leaf.Chain {
			require.Equal(t, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), got[i], "block %d", i)
		}
	}
}
