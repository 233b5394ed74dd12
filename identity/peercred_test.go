package identity

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

// startPeerCredServer serves the gRPC health service on a unix socket with
// PeerCredentials and reports the caller's peer credentials per call.
func startPeerCredServer(t *testing.T) (string, <-chan PeerCred) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	lis, err := net.Listen("unix", sock)
	require.NoError(t, err)
	seen := make(chan PeerCred, 1)
	intercept := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if pc, ok := PeerCredFromContext(ctx); ok {
			seen <- pc
		}
		return h(ctx, req)
	}
	srv := grpc.NewServer(grpc.Creds(PeerCredentials()), grpc.UnaryInterceptor(intercept))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return sock, seen
}

func TestPeerCredentialsOverUnixSocket(t *testing.T) {
	sock, seen := startPeerCredServer(t)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(PeerCredentials()))
	require.NoError(t, err)
	defer conn.Close()

	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())

	select {
	case pc := <-seen:
		require.Equal(t, uint32(os.Getuid()), pc.UID)
		require.Equal(t, uint32(os.Getgid()), pc.GID)
		require.Equal(t, int32(os.Getpid()), pc.PID)
	default:
		t.Fatal("server saw no peer credentials")
	}
}

func TestServerHandshakeRejectsNonUnixConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_, _, err := PeerCredentials().ServerHandshake(a)
	require.ErrorIs(t, err, errNotUnixConn)
}

func TestPeerCredFromContext(t *testing.T) {
	want := PeerCred{UID: 1, GID: 2, PID: 3}
	tests := []struct {
		name   string
		ctx    context.Context
		wantOK bool
	}{
		{name: "no peer", ctx: context.Background()},
		{name: "no auth info", ctx: peer.NewContext(context.Background(), &peer.Peer{})},
		{name: "other auth info", ctx: peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{}})},
		{name: "peer cred", ctx: peer.NewContext(context.Background(), &peer.Peer{AuthInfo: PeerAuthInfo{Cred: want}}), wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := PeerCredFromContext(tt.ctx)
			require.Equal(t, tt.wantOK, ok)
			if ok {
				require.Equal(t, want, got)
			}
		})
	}
}

func TestPeerAttestor(t *testing.T) {
	r, err := ParseRegistrations([]byte(exampleRegistrations), "r.yaml")
	require.NoError(t, err)
	a := &PeerAttestor{Registrations: r}
	tests := []struct {
		name    string
		cred    Credential
		want    Identity
		wantErr error
	}{
		{name: "no peer", cred: Credential{BearerToken: "cmjt.x"}, wantErr: ErrNotApplicable},
		{name: "unregistered", cred: Credential{Peer: &PeerCred{UID: 7, GID: 7}}, wantErr: ErrNoRegistration},
		{
			name: "registered",
			cred: Credential{Peer: &PeerCred{UID: 0, GID: 0}},
			want: Identity{
				ID:       spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web"),
				DNSNames: []string{"web.default.svc"},
				Attestor: AttestorUnix,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Attest(context.Background(), tt.cred)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

// TestPeerAttestorScopedToNode: with Node set, a caller is matched against
// the node's entries only, and attestation waits (bounded by its context)
// until the node is known.
func TestPeerAttestorScopedToNode(t *testing.T) {
	r, err := ParseRegistrations([]byte(`trustDomain: example.org
workloads:
  - {spiffeID: spiffe://example.org/n1/app, uid: 10, nodes: [spiffe://example.org/certmesh/node/n1]}
  - {spiffeID: spiffe://example.org/n2/app, uid: 10, nodes: [spiffe://example.org/certmesh/node/n2]}
`), "r.yaml")
	require.NoError(t, err)
	known := make(chan spiffeid.ID, 1)
	calls := 0
	a := &PeerAttestor{Registrations: r, Node: func(ctx context.Context) (spiffeid.ID, error) {
		calls++
		select {
		case id := <-known:
			known <- id
			return id, nil
		case <-ctx.Done():
			return spiffeid.ID{}, ctx.Err()
		}
	}}
	caller := Credential{Peer: &PeerCred{UID: 10, GID: 10}}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = a.Attest(ctx, caller)
	require.ErrorIs(t, err, context.Canceled, "not joined yet, and the caller gave up")

	known <- spiffeid.RequireFromString("spiffe://example.org/certmesh/node/n2")
	for range 2 {
		got, err := a.Attest(context.Background(), caller)
		require.NoError(t, err)
		require.Equal(t, "spiffe://example.org/n2/app", got.ID.String())
	}
	require.Equal(t, 2, calls, "the node is asked for until known, then remembered")
}
