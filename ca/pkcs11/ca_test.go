//go:build cgo

package pkcs11_test

import (
	"crypto/ecdsa"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
	"github.com/certmesh/certmesh/ca/pkcs11"
	"github.com/certmesh/certmesh/ca/pkcs11/pkcs11test"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func shortTTLs(cfg *ca.Config) {
	cfg.IntermediateTTL, cfg.MaxTTL, cfg.DefaultTTL = 3*time.Minute, time.Minute, time.Minute
}

func verify(t *testing.T, c *catest.CA) *x509svid.SVID {
	t.Helper()
	svid := c.SVID(t, "spiffe://example.org/w", time.Minute)
	_, _, err := x509svid.Verify(svid.Certificates, c.Bundle(), x509svid.WithTime(c.Clock.Now()))
	require.NoError(t, err)
	return svid
}

// TestIntermediateOnToken: the intermediate key is made on the token, the
// state directory records its URI (no key, no PIN), leaves verify, a
// restart opens it again and a renewal makes the next key on the token.
func TestIntermediateOnToken(t *testing.T) {
	tk := pkcs11test.NewToken(t, "certmesh-intermediate")
	c := catest.New(t, "example.org", shortTTLs, func(cfg *ca.Config) {
		cfg.IntermediateKeys, cfg.OpenKey = tk.Store(t), tk.Provider.OpenKey
	})
	id := c.Status().Authorities[0].ID
	adir := filepath.Join(c.Dir, "authorities", id)
	require.NoFileExists(t, filepath.Join(adir, "intermediate.key"), "no key file for a key on a token")
	require.FileExists(t, filepath.Join(adir, "root.key"), "the root stays in a file unless asked")
	uri := readURI(t, filepath.Join(adir, "intermediate.key.uri"))
	require.True(t, strings.HasPrefix(uri, "pkcs11:token=certmesh;object=certmesh-intermediate-"), uri)
	require.NotContains(t, uri, "1234", "never a PIN on disk")
	svid := verify(t, c)
	require.IsType(t, &pkcs11.Key{}, mustOpen(t, tk, uri))
	require.True(t, mustOpen(t, tk, uri).Public().(*ecdsa.PublicKey).Equal(svid.Certificates[1].PublicKey))

	again, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock, IntermediateTTL: 3 * time.Minute, MaxTTL: time.Minute, DefaultTTL: time.Minute,
		IntermediateKeys: tk.Store(t), OpenKey: tk.Provider.OpenKey})
	require.NoError(t, err, "a restart opens the key on the token")
	c.CA = again
	verify(t, c)

	c.Clock.Step(90 * time.Second)
	require.NoError(t, c.Advance(), "renewal at half life")
	name := c.Status().Authorities[0].Intermediate
	require.NotEmpty(t, name)
	next := readURI(t, filepath.Join(adir, "intermediate-"+name+".key.uri"))
	require.NotEqual(t, uri, next, "a new key on the token")
	require.NoFileExists(t, filepath.Join(adir, "intermediate-"+name+".key"))
	renewed := verify(t, c)
	require.True(t, mustOpen(t, tk, next).Public().(*ecdsa.PublicKey).Equal(renewed.Certificates[1].PublicKey))

	for range 8 { // past the first intermediate's end: it is retired
		c.Clock.Step(15 * time.Second)
		require.NoError(t, c.Advance())
	}
	require.NoFileExists(t, filepath.Join(adir, "intermediate.key.uri"))
	_, err = tk.Provider.OpenKey(uri)
	require.ErrorIs(t, err, pkcs11.ErrNoKey, "a retired intermediate's key is removed from the token")
	verify(t, c)
}

// TestRootOnToken: a root key on the token signs the intermediate, and a
// root rotation makes the new root's key there too.
func TestRootOnToken(t *testing.T) {
	tk := pkcs11test.NewToken(t, "certmesh-root")
	store := tk.Store(t)
	c := catest.New(t, "example.org", func(cfg *ca.Config) {
		cfg.RootKeys, cfg.IntermediateKeys, cfg.OpenKey = store, store, tk.Provider.OpenKey
	})
	adir := filepath.Join(c.Dir, "authorities", c.Status().Authorities[0].ID)
	require.NoFileExists(t, filepath.Join(adir, "root.key"))
	require.FileExists(t, filepath.Join(adir, "root.key.uri"))
	verify(t, c)
	st, err := c.Rotate()
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(c.Dir, "authorities", st.ID, "root.key.uri"))
	require.NoFileExists(t, filepath.Join(c.Dir, "authorities", st.ID, "root.key"))
	files, err := ca.ReadFiles(c.Dir)
	require.NoError(t, err)
	require.Contains(t, files, "authorities/"+st.ID+"/root.key.uri", "exported with the CA's files")
}

// TestTokenGoesAway: while the token is gone Sign fails with
// ca.ErrKeyUnavailable (what the service counts as hsm_unavailable), the
// SVIDs already issued stay valid, and signing resumes when it returns.
func TestTokenGoesAway(t *testing.T) {
	tk := pkcs11test.NewToken(t, "certmesh-intermediate")
	c := catest.New(t, "example.org", func(cfg *ca.Config) {
		cfg.IntermediateKeys, cfg.OpenKey = tk.Store(t), tk.Provider.OpenKey
	})
	held := verify(t, c)

	require.NoError(t, os.Rename(tk.Dir, tk.Dir+".away"))
	for i := 0; i < 3; i++ {
		_, err := c.Sign(ca.SignParams{PublicKey: held.PrivateKey.Public(), ID: held.ID})
		t.Logf("token gone: %v", err)
		require.ErrorIs(t, err, ca.ErrKeyUnavailable, "attempt %d", i)
		require.ErrorIs(t, err, pkcs11.ErrUnavailable)
	}
	_, _, err := x509svid.Verify(held.Certificates, c.Bundle(), x509svid.WithTime(c.Clock.Now()))
	require.NoError(t, err, "an SVID issued before stays valid")

	require.NoError(t, os.Rename(tk.Dir+".away", tk.Dir))
	verify(t, c)
}

func readURI(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

func mustOpen(t *testing.T, tk *pkcs11test.Token, uri string) *pkcs11.Key {
	t.Helper()
	k, err := tk.Provider.OpenKey(uri)
	require.NoError(t, err)
	return k.(*pkcs11.Key)
}

// TestRenewalNeedsTheToken: a CA restarted without the intermediate's key
// store still signs, but does not renew the intermediate into a file.
func TestRenewalNeedsTheToken(t *testing.T) {
	tk := pkcs11test.NewToken(t, "certmesh-intermediate")
	c := catest.New(t, "example.org", shortTTLs, func(cfg *ca.Config) {
		cfg.IntermediateKeys, cfg.OpenKey = tk.Store(t), tk.Provider.OpenKey
	})
	again, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock, IntermediateTTL: 3 * time.Minute, MaxTTL: time.Minute, DefaultTTL: time.Minute,
		OpenKey: tk.Provider.OpenKey})
	require.NoError(t, err)
	c.CA = again
	verify(t, c)
	c.Clock.Step(90 * time.Second)
	require.ErrorIs(t, c.Advance(), ca.ErrNoKeyStore)
	verify(t, c)
}

// TestConcurrentSigning: leaves signed from several goroutines while the
// token goes away and comes back either succeed and verify or fail with
// ca.ErrKeyUnavailable; afterwards every one succeeds.
func TestConcurrentSigning(t *testing.T) {
	tk := pkcs11test.NewToken(t, "certmesh-intermediate")
	store := tk.Store(t)
	c := catest.New(t, "example.org", func(cfg *ca.Config) {
		cfg.RootKeys, cfg.IntermediateKeys, cfg.OpenKey = store, store, tk.Provider.OpenKey
	})
	held := verify(t, c)
	sign := func() error {
		_, err := c.Sign(ca.SignParams{PublicKey: held.PrivateKey.Public(), ID: held.ID})
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4*50)
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if err := sign(); err != nil {
					errs <- err
				}
			}
		})
	}
	require.NoError(t, os.Rename(tk.Dir, tk.Dir+".away"))
	require.NoError(t, os.Rename(tk.Dir+".away", tk.Dir))
	wg.Wait()
	close(errs)
	for err := range errs {
		require.ErrorIs(t, err, ca.ErrKeyUnavailable)
	}
	for range 10 {
		require.NoError(t, sign())
	}
}
