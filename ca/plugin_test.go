package ca_test

import (
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
)

func material(p *catest.PluginCA) ca.PluginMaterial {
	return ca.PluginMaterial{Root: p.RootPEM, Cert: p.CertPEM, Key: p.KeyPEM, Chain: p.ChainPEM, TrustDomain: td, Now: catest.Epoch}
}

func TestParsePlugin(t *testing.T) {
	good := catest.NewPluginCA(t, "op")
	other := catest.NewPluginCA(t, "other")
	tests := []struct {
		name     string
		edit     func(m *ca.PluginMaterial)
		part     ca.PluginPart
		sentinel error
	}{
		{name: "valid", edit: func(*ca.PluginMaterial) {}},
		{name: "valid without a chain", edit: func(m *ca.PluginMaterial) { m.Chain = nil }},
		{name: "key of another CA", edit: func(m *ca.PluginMaterial) { m.Key = other.KeyPEM }, part: ca.PartKey, sentinel: ca.ErrPluginKeyMismatch},
		{name: "certificate is not a CA", edit: func(m *ca.PluginMaterial) {
			leaf := good.Issue(t, "leaf", false)
			m.Cert, m.Key, m.Chain = leaf.CertPEM, leaf.KeyPEM, leaf.ChainPEM
		}, part: ca.PartCert, sentinel: ca.ErrPluginNotCA},
		{name: "another root", edit: func(m *ca.PluginMaterial) { m.Root, m.Chain = other.RootPEM, nil }, part: ca.PartCert, sentinel: ca.ErrPluginChain},
		{name: "chain in the wrong order", edit: func(m *ca.PluginMaterial) { m.Chain = ca.EncodeCertsPEM(good.Root, good.Cert) }, part: ca.PartChain, sentinel: ca.ErrPluginChain},
		{name: "chain of another CA", edit: func(m *ca.PluginMaterial) { m.Chain = other.ChainPEM }, part: ca.PartChain, sentinel: ca.ErrPluginChain},
		{name: "the root as CA certificate", edit: func(m *ca.PluginMaterial) {
			k, err := ca.EncodeKeyPEM(good.RootKey)
			require.NoError(t, err)
			m.Cert, m.Key, m.Chain = good.RootPEM, k, nil
		}, part: ca.PartCert, sentinel: ca.ErrPluginChain},
		{name: "expired", edit: func(m *ca.PluginMaterial) { m.Now = good.Cert.NotAfter }, part: ca.PartCert, sentinel: ca.ErrPluginExpired},
		{name: "garbage key", edit: func(m *ca.PluginMaterial) { m.Key = []byte("nope") }, part: ca.PartKey, sentinel: ca.ErrPluginParse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := material(good)
			tt.edit(&m)
			a, err := ca.ParsePlugin(m)
			if tt.sentinel == nil {
				require.NoError(t, err)
				require.True(t, a.Root.Equal(good.Root))
				require.Nil(t, a.RootKey)
				return
			}
			require.ErrorIs(t, err, tt.sentinel)
			var pe *ca.PluginError
			require.True(t, errors.As(err, &pe))
			require.Equal(t, tt.part, pe.Part, "%v", err)
		})
	}
}

// verifies checks that an SVID of c verifies against roots alone.
func verifies(t *testing.T, c *catest.CA, p *catest.PluginCA) *x509svid.SVID {
	t.Helper()
	svid := c.SVID(t, "spiffe://example.org/w", time.Hour)
	_, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(td, c.Roots()), x509svid.WithTime(c.Clock.Now()))
	require.NoError(t, err)
	require.True(t, svid.Certificates[1].Equal(p.Cert), "signed by the plugged CA certificate")
	return svid
}

func TestPlugNewRootIsPreparedThenSigns(t *testing.T) {
	c := catest.New(t, "example.org", func(cfg *ca.Config) { cfg.RotationOverlap = time.Hour })
	old := c.Roots()[0]
	p := catest.NewPluginCA(t, "op")
	a, err := ca.ParsePlugin(material(p))
	require.NoError(t, err)

	out, err := c.Plug(a)
	require.NoError(t, err)
	require.Equal(t, ca.PlugPrepared, out)
	require.Len(t, c.Roots(), 2, "the plugged root is in the bundle before it signs")
	svid := c.SVID(t, "spiffe://example.org/w", time.Hour)
	require.NoError(t, svid.Certificates[0].CheckSignatureFrom(svid.Certificates[1]))
	require.False(t, svid.Certificates[1].Equal(p.Cert), "not signing yet")

	out, err = c.Plug(a)
	require.NoError(t, err)
	require.Equal(t, ca.PlugUnchanged, out, "the same material again changes nothing")

	c.Clock.Step(time.Hour)
	require.NoError(t, c.Advance())
	verifies(t, c, p)
	require.True(t, c.Roots()[0].Equal(old), "the old root stays for its leaves")

	st := c.Status()
	for _, info := range st.Authorities {
		if info.ID == a.ID {
			require.Equal(t, ca.NotRenewableNoRootKey, info.NotRenewable, "never renewed: no root key")
		}
	}
	c.Clock.Step(ca.DefaultMaxTTL + ca.LeafBackdate)
	require.NoError(t, c.Advance())
	require.Len(t, c.Roots(), 1)
	require.True(t, c.Roots()[0].Equal(p.Root))
}

func TestPlugSameRootSwitchesAtOnce(t *testing.T) {
	p := catest.NewPluginCA(t, "op")
	a, err := ca.ParsePlugin(material(p))
	require.NoError(t, err)
	imp, err := a.ImportParams()
	require.NoError(t, err)
	c := catest.New(t, "example.org", func(cfg *ca.Config) { cfg.Import = imp })
	verifies(t, c, p)

	// Days pass: no renewal is attempted without a root key.
	c.Clock.Step(30 * 24 * time.Hour)
	require.NoError(t, c.Advance())
	verifies(t, c, p)

	p2 := p.Issue(t, "op ca 2", true)
	a2, err := ca.ParsePlugin(material(p2))
	require.NoError(t, err)
	out, err := c.Plug(a2)
	require.NoError(t, err)
	require.Equal(t, ca.PlugIntermediate, out)
	require.Len(t, c.Roots(), 1, "same root: the bundle does not change")
	verifies(t, c, p2)
	require.Len(t, c.Status().State[0].OldIntermediates, 1, "the old CA certificate is kept for its leaves")
}

func TestPlugReplacesAPreparedPluggedRoot(t *testing.T) {
	c := catest.New(t, "example.org")
	first, err := ca.ParsePlugin(material(catest.NewPluginCA(t, "one")))
	require.NoError(t, err)
	_, err = c.Plug(first)
	require.NoError(t, err)
	p := catest.NewPluginCA(t, "two")
	second, err := ca.ParsePlugin(material(p))
	require.NoError(t, err)
	out, err := c.Plug(second)
	require.NoError(t, err)
	require.Equal(t, ca.PlugPrepared, out)
	require.Len(t, c.Roots(), 2, "the first plugged root never signed and left the bundle")
	require.True(t, c.Roots()[1].Equal(p.Root))
}
