package kube_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/identity"
	k8sid "github.com/certmesh/certmesh/identity/k8s"
	"github.com/certmesh/certmesh/sds"
)

// service creates a Service selecting labels in ns.
func service(t *testing.T, ns, name string, selector map[string]string) {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{Port: 80}}}}
	_, err := cluster.Client.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
	require.NoError(t, err)
}

// TestWorkloadAgentGetsSVID runs the whole path: a pod-bound projected
// token (TokenRequest) in a file → the agent in workload mode → the server's
// TokenReview attestor → an SVID for the pod's ServiceAccount with the DNS
// names of the pod's Services only, served to a local caller over the
// SPIFFE Workload API.
func TestWorkloadAgentGetsSVID(t *testing.T) {
	ns := cluster.Namespace(t)
	srv := startServer(t, serverOpts{ns: ns})
	pod := cluster.Pod(t, ns, "web-0", "web", map[string]string{"app": "web"})
	service(t, ns, "web", map[string]string{"app": "web"})
	service(t, ns, "db", map[string]string{"app": "db"})
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(cluster.ServiceAccountToken(t, ns, "web", audience, pod)), 0o600))

	agent, err := sds.New(sds.Config{TrustDomain: td, ServerAddr: srv.Addr(), TrustBundle: srv.CA.Roots(), Credential: sds.TokenFile{Path: tokenFile}})
	require.NoError(t, err)
	socket := filepath.Join(t.TempDir(), "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	go func() { errc <- agent.Run(ctx) }()
	go func() {
		errc <- sds.ServeEndpoints(ctx, sds.EndpointsConfig{Socket: socket, Agent: agent, Attestor: sds.PodAttestor{Agent: agent}})
	}()
	t.Cleanup(func() { cancel(); <-errc; <-errc })

	select {
	case <-agent.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not get its SVID within 30 s")
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	svid, err := workloadapi.FetchX509SVID(wctx, workloadapi.WithAddr("unix://"+socket))
	require.NoError(t, err)
	require.Equal(t, spiffeid.RequireFromPath(td, "/ns/"+ns+"/sa/web"), svid.ID)
	require.ElementsMatch(t, []string{"web." + ns + ".svc", "web." + ns + ".svc.cluster.local"}, svid.Certificates[0].DNSNames)
}

func newCSR(t testing.TB) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// TestRefusedTokens checks each refusal twice: the attestor's sentinel
// (errors.Is) and, through the running server, the gRPC code and the
// refusal counter's reason.
func TestRefusedTokens(t *testing.T) {
	ns := cluster.Namespace(t)
	policy := k8sid.Policy{ExcludedServiceAccounts: []string{ns + "/blocked"}}
	srv := startServer(t, serverOpts{ns: ns, policy: policy})
	client := caClient(t, srv)

	gone := cluster.Pod(t, ns, "gone-0", "web", nil)
	goneToken := cluster.ServiceAccountToken(t, ns, "web", audience, gone) // never reviewed before the pod is deleted
	require.NoError(t, cluster.Client.CoreV1().Pods(ns).Delete(context.Background(), gone.Name, metav1.DeleteOptions{}))
	good := cluster.ServiceAccountToken(t, ns, "web", audience, nil)

	cases := []struct {
		name   string
		token  string
		clock  time.Time // zero: now
		want   error
		reason string
		code   codes.Code
	}{
		{name: "other audience", token: cluster.ServiceAccountToken(t, ns, "web", "https://other.example", nil), want: k8sid.ErrWrongAudience, reason: "k8s_wrong_audience", code: codes.Unauthenticated},
		{name: "pod deleted", token: goneToken, want: k8sid.ErrPodGone, reason: "k8s_pod_gone", code: codes.Unauthenticated},
		{name: "excluded service account", token: cluster.ServiceAccountToken(t, ns, "blocked", audience, nil), want: k8sid.ErrExcluded, reason: "k8s_excluded", code: codes.PermissionDenied},
		{name: "tampered", token: good[:len(good)-4] + "AAAA", want: k8sid.ErrRejected, reason: "k8s_token_rejected", code: codes.Unauthenticated},
		{name: "expired", token: good, clock: time.Now().Add(2 * time.Hour), want: k8sid.ErrExpired},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := k8sid.Config{Client: cluster.Client, TrustDomain: td, Policy: policy}
			if !tc.clock.IsZero() {
				cfg.Clock = clocktesting.NewFakePassiveClock(tc.clock)
			}
			att, err := k8sid.New(cfg)
			require.NoError(t, err)
			_, err = att.Attest(context.Background(), identity.Credential{BearerToken: tc.token})
			require.ErrorIs(t, err, tc.want)
			if tc.reason == "" {
				return // the server's clock is real: the token is not expired there
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			before := srv.refusals(tc.reason)
			_, err = requestSVID(ctx, client, newCSR(t), tc.token)
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			require.Equal(t, before+1, srv.refusals(tc.reason))
		})
	}

	// The good token still works, for the right ServiceAccount.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	leaf, err := requestSVID(ctx, client, newCSR(t), good)
	require.NoError(t, err)
	require.Equal(t, "spiffe://example.org/ns/"+ns+"/sa/web", leaf.URIs[0].String())
	require.Empty(t, leaf.DNSNames, "a token not bound to a pod gets no DNS names")
}
