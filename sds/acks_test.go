package sds_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/identity"
	"github.com/certmesh/certmesh/sds"
)

// anyCallerIsWeb gives every local caller the web identity.
type anyCallerIsWeb struct{}

func (anyCallerIsWeb) Attest(context.Context, identity.Credential) (identity.Identity, error) {
	return identity.Identity{ID: web}, nil
}

// TestRotationWaitsForEnvoyACK: the CA switches signing to a new root only
// after the Envoy watching ROOTCA through the agent has ACKed the bundle
// that contains it.
func TestRotationWaitsForEnvoyACK(t *testing.T) {
	c := startCA(t, t.TempDir(), "127.0.0.1:0", func(cfg *server.Config) { cfg.CA.RotationOverlap = time.Millisecond })
	a := startAgent(t, c, web)
	socket := filepath.Join(t.TempDir(), "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- sds.ServeEndpoints(ctx, sds.EndpointsConfig{Socket: socket, Agent: a.Agent, Attestor: anyCallerIsWeb{}})
	}()
	t.Cleanup(func() { cancel(); require.NoError(t, <-served) })
	waitFor(t, "the agent socket", func() bool { _, err := os.Stat(socket); return err == nil })

	stream := envoyStream(t, ctx, socket)
	first := recvSecrets(t, stream)
	ackSecrets(t, stream, first)
	waitFor(t, "the agent's first report", func() bool {
		a.clock.Step(200 * time.Millisecond)
		return c.Acks().Agents() == 1
	})

	_, err := c.CA.Rotate()
	require.NoError(t, err)
	second := recvSecrets(t, stream) // the bundle with both roots, not ACKed yet
	waitFor(t, "the CA to hold the switch for the un-ACKed Envoy", func() bool {
		a.clock.Step(200 * time.Millisecond)
		require.NoError(t, c.CA.Advance())
		st := c.CA.Status()
		require.Equal(t, "prepared", st.Phase, "must not switch before Envoy ACKs")
		return st.WaitingGate && st.Lagging >= 1
	})

	ackSecrets(t, stream, second)
	waitFor(t, "the switch after the ACK", func() bool {
		a.clock.Step(200 * time.Millisecond)
		require.NoError(t, c.CA.Advance())
		return c.CA.Status().Phase == "retiring"
	})
}

func envoyStream(t *testing.T, ctx context.Context, socket string) secretv3.SecretDiscoveryService_StreamSecretsClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	s, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	require.NoError(t, err)
	require.NoError(t, s.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "envoy"}, ResourceNames: []string{"ROOTCA"},
		TypeUrl: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"}))
	return s
}

func recvSecrets(t *testing.T, s secretv3.SecretDiscoveryService_StreamSecretsClient) *discoveryv3.DiscoveryResponse {
	t.Helper()
	got := make(chan *discoveryv3.DiscoveryResponse, 1)
	go func() {
		r, err := s.Recv()
		if err == nil {
			got <- r
		}
		close(got)
	}()
	select {
	case r, ok := <-got:
		require.True(t, ok, "stream ended")
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no SDS response within 10s")
		return nil
	}
}

func ackSecrets(t *testing.T, s secretv3.SecretDiscoveryService_StreamSecretsClient, r *discoveryv3.DiscoveryResponse) {
	t.Helper()
	require.NoError(t, s.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "envoy"}, ResourceNames: []string{"ROOTCA"},
		TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()}))
}
