package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/ca/wire"
)

// TestCARotateForce: a node agent that keeps reporting the old bundle holds
// a due rotation; `certmesh ca rotate --force` on the admin socket switches
// it, and the server counts the override.
func TestCARotateForce(t *testing.T) {
	dir, err := os.MkdirTemp("", "cm") // short: a unix socket path has a length limit
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	td := spiffeid.RequireTrustDomainFromString("example.org")
	clk := clocktesting.NewFakeClock(catest.Epoch)
	reg := prometheus.NewRegistry()
	srv, err := server.New(server.Config{Dir: dir, TrustDomain: td, Listen: "127.0.0.1:0", Clock: clk, Registerer: reg,
		CA: ca.Config{RotationOverlap: 10 * time.Second}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	require.Eventually(t, func() bool { _, err := os.Stat(filepath.Join(dir, "admin.sock")); return err == nil }, 10*time.Second, 10*time.Millisecond)

	var out bytes.Buffer
	require.ErrorContains(t, caRotate(ctx, []string{"--dir", dir, "--force"}, &out), ca.ErrNoRotation.Error())
	require.NoError(t, caRotate(ctx, []string{"--dir", dir}, &out))
	stale := wire.BundleDigest(srv.CA.Roots()[:1])
	reportAs(t, srv, "spiffe://example.org/certmesh/node/n1", wire.AckReport{Instance: "a", Bundle: hex.EncodeToString(stale[:]), Watchers: 2})
	clk.Step(10 * time.Second)
	require.NoError(t, srv.CA.Advance())
	st := srv.CA.Status()
	require.True(t, st.WaitingGate, "held by the agent on the old bundle")
	require.Equal(t, 2, st.Lagging)

	out.Reset()
	require.NoError(t, caRotate(ctx, []string{"--dir", dir, "--force"}, &out))
	require.Contains(t, out.String(), "forced although 2 watchers did not hold its root yet")
	require.Equal(t, "retiring", srv.CA.Status().Phase)
	require.Equal(t, 1.0, counterValue(t, reg, "certmesh_ca_rotation_forced_total"))
}

// reportAs sends rep as the node agent id, over mTLS with an SVID of srv's CA.
func reportAs(t *testing.T, srv *server.Server, id string, rep wire.AckReport) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leaf, err := srv.CA.Sign(ca.SignParams{PublicKey: key.Public(), ID: spiffeid.RequireFromString(id), TTL: time.Hour})
	require.NoError(t, err)
	svid := catest.ToSVID(t, leaf, key)
	cfg := tlsconfig.MTLSClientConfig(svid, srv.CA.Bundle(), tlsconfig.AuthorizeID(wire.ServerID(srv.CA.TrustDomain())))
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, wire.SendAckReport(ctx, conn, rep))
}

// counterValue is the value of the counter name (without labels) in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			require.Len(t, mf.GetMetric(), 1)
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestCARotateOfflineKeepsKeyType: `ca rotate` on a stopped server's
// directory once turned an RSA-4096 CA into EC P-256; the new root and
// intermediate must keep the CA's key type, with or without --root.
func TestCARotateOfflineKeepsKeyType(t *testing.T) {
	if testing.Short() {
		t.Skip("RSA-4096 key generation")
	}
	dir := t.TempDir()
	var out bytes.Buffer
	require.NoError(t, caInit([]string{"--dir", dir, "--trust-domain", "example.org", "--key-type", "rsa-4096"}, &out))
	require.NoError(t, caRotate(context.Background(), []string{"--dir", dir, "--root"}, &out))
	snap, err := ca.ReadSnapshot(caDir(dir))
	require.NoError(t, err)
	require.Len(t, snap.Roots, 2)
	for _, a := range snap.Roots {
		for _, c := range []*x509.Certificate{a.Root, a.Intermediate} {
			kt, err := ca.KeyTypeOf(c.PublicKey)
			require.NoError(t, err)
			require.Equal(t, ca.KeyRSA4096, kt, c.Subject.String())
		}
	}
	out.Reset()
	require.NoError(t, caInspect(context.Background(), []string{"--dir", dir}, &out))
	require.Contains(t, out.String(), "activate root at")
	require.Contains(t, out.String(), "renew intermediate at")
}
