// Package kube_test checks certmesh's Kubernetes mode against a real
// kube-apiserver and etcd (test/kube/kubetest; binaries from
// test/tools/kube.sh): ServiceAccount-token attestation through TokenReview,
// the agent's workload mode, the CA shared through a Secret, leader
// election and trust bundle publication.
package kube_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"
	"k8s.io/client-go/kubernetes"
	k8smetadata "k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/identity"
	k8sid "github.com/certmesh/certmesh/identity/k8s"
	"github.com/certmesh/certmesh/test/harness"
	"github.com/certmesh/certmesh/test/kube/kubetest"
)

var (
	cluster *kubetest.Cluster
	td      = spiffeid.RequireTrustDomainFromString("example.org")
)

const audience = "spiffe://example.org"

func TestMain(m *testing.M) {
	klog.LogToStderr(false) // client-go's leader election logs every term
	klog.SetOutput(io.Discard)
	code := harness.Cleanup(kubetest.RunMain(m, &cluster))
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
			goleak.IgnoreAnyFunction("k8s.io/client-go/util/workqueue.(*Typed[...]).updateUnfinishedWorkLoop"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait")); err != nil {
			_, _ = os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

// countingConfig returns a copy of the admin config whose requests are
// counted in n: the figure "apiserver requests per SVID" comes from it.
func countingConfig(n *atomic.Int64) *rest.Config {
	cfg := rest.CopyConfig(cluster.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) { n.Add(1); return rt.RoundTrip(r) })
	})
	return cfg
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// serverOpts adjust a test server.
type serverOpts struct {
	ns        string
	identity  string
	requests  *atomic.Int64
	policy    k8sid.Policy
	cacheSize int
	// watchServices runs the attestor's Service watch cache (server default) and
	// waits until it has synced.
	watchServices bool
	// watchPods runs the attestor's Pod watch cache (server default) and waits
	// until it has synced: pods created before startServer are in it.
	watchPods bool
	lease     *server.KubernetesConfig // timing overrides
	overlap   time.Duration
}

type testServer struct {
	*server.Server
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// startServer runs `certmesh server --kubernetes` in-process against the
// test cluster and stops it in t.Cleanup (or earlier with stop).
func startServer(t testing.TB, o serverOpts) *testServer {
	t.Helper()
	if o.requests == nil {
		o.requests = new(atomic.Int64)
	}
	if o.identity == "" {
		o.identity = "replica-0"
	}
	// The attestor's requests are counted apart from the lease renewals and
	// bundle writes of the rest of the server.
	reviewClient, err := kubernetes.NewForConfig(countingConfig(o.requests))
	require.NoError(t, err)
	client, err := kubernetes.NewForConfig(cluster.Config)
	require.NoError(t, err)
	// The Pod watch is metadata-only, as certmesh server runs it.
	metaClient, err := k8smetadata.NewForConfig(countingConfig(o.requests))
	require.NoError(t, err)
	att, err := k8sid.New(k8sid.Config{Client: reviewClient, TrustDomain: td, Policy: o.policy, CacheSize: o.cacheSize,
		WatchServices: o.watchServices, WatchPods: o.watchPods, Metadata: metaClient})
	require.NoError(t, err)
	kc := &server.KubernetesConfig{Client: client, Namespace: o.ns, Identity: o.identity,
		LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 500 * time.Millisecond}
	if o.lease != nil {
		kc.LeaseDuration, kc.RenewDeadline, kc.RetryPeriod, kc.KeepLeaseOnStop = o.lease.LeaseDuration, o.lease.RenewDeadline, o.lease.RetryPeriod, o.lease.KeepLeaseOnStop
	}
	reg := prometheus.NewRegistry()
	srv, err := server.New(server.Config{
		Dir: filepath.Join(t.TempDir(), o.identity), TrustDomain: td, Listen: "127.0.0.1:0",
		CA: ca.Config{RotationOverlap: o.overlap}, Attestors: []identity.Attestor{att}, Kubernetes: kc, Registerer: reg,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: srv, reg: reg, cancel: cancel, done: make(chan error, 1)}
	attDone := make(chan error, 1)
	go func() { attDone <- att.Run(ctx) }()
	go func() { ts.done <- errors.Join(srv.Run(ctx), <-attDone) }()
	t.Cleanup(ts.stop)
	if o.watchServices {
		require.Eventually(t, att.ServicesCached, 30*time.Second, 10*time.Millisecond, "Service watch cache")
	}
	if o.watchPods {
		require.Eventually(t, att.PodsCached, 30*time.Second, 10*time.Millisecond, "Pod watch cache")
	}
	return ts
}

func (s *testServer) stop() {
	s.cancel()
	<-s.done
	s.done <- nil // later stops return at once
}

// refusals reads certmesh_ca_refusals_total for reason.
func (s *testServer) refusals(reason string) float64 {
	mfs, _ := s.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "certmesh_ca_refusals_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// caClient dials the server's TLS listener trusting its CA.
func caClient(t testing.TB, s *testServer) pb.IstioCertificateServiceClient {
	t.Helper()
	pool := x509.NewCertPool()
	for _, r := range s.CA.Roots() {
		pool.AddCert(r)
	}
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return pb.NewIstioCertificateServiceClient(conn)
}

// requestSVID asks for an SVID with token as the bearer and returns the leaf.
func requestSVID(ctx context.Context, c pb.IstioCertificateServiceClient, csrPEM, token string) (*x509.Certificate, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	resp, err := c.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csrPEM})
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode([]byte(resp.GetCertChain()[0]))
	return x509.ParseCertificate(b.Bytes)
}
