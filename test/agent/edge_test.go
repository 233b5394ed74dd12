package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/certmesh/certmesh/edge/pebbletest"
	"github.com/certmesh/certmesh/test/harness"
)

// TestDevServesEdgeCertificateOverSDS runs certmesh dev against a real
// Pebble: the certificate lands in DIR/edge/<name>/ and an authorized
// gateway fetches it over SDS under that name.
func TestDevServesEdgeCertificateOverSDS(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{})
	caBundle := filepath.Join(t.TempDir(), "pebble-ca.pem")
	require.NoError(t, os.WriteFile(caBundle, p.TLSRoot, 0o644))
	const name = "shop.example.test"
	dir := harness.StateDir(t)
	d := startDevWith(t, dir, registrations(t, harness.Workload{EdgeCertificates: []string{name}}),
		"--acme-directory", p.DirectoryURL, "--acme-email", "ops@example.com", "--acme-ca-bundle", caBundle,
		"--acme-profile", "default", "--edge-domain", name, "--http01-addr", "127.0.0.1:"+strconv.Itoa(p.HTTPPort))

	crt := filepath.Join(dir, "edge", name, "tls.crt")
	harness.Poll{Timeout: 30 * time.Second, Detail: d.String}.WaitFor(t, "an edge certificate", func() bool {
		_, err := os.Stat(crt)
		return err == nil
	})
	fi, err := os.Stat(filepath.Join(dir, "edge", name, "tls.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	onDisk, err := os.ReadFile(crt)
	require.NoError(t, err)

	secret := fetchSecret(t, d, name)
	chain := secret.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
	require.Equal(t, string(onDisk), string(chain), "SDS serves what was stored")
	require.NotEmpty(t, secret.GetTlsCertificate().GetPrivateKey().GetInlineBytes())
}

// fetchSecret asks the agent socket for one SDS resource, as Envoy would.
func fetchSecret(t *testing.T, d *dev, name string) *tlsv3.Secret {
	t.Helper()
	conn, err := grpc.NewClient(d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: "gateway"}, ResourceNames: []string{name},
		TypeUrl: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
	})
	require.NoError(t, err)
	require.Len(t, resp.GetResources(), 1)
	var s tlsv3.Secret
	require.NoError(t, resp.GetResources()[0].UnmarshalTo(&s))
	require.Equal(t, name, s.GetName())
	return &s
}
