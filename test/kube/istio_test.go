package kube_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/test/harness"
)

// istioTD is Istio's default trust domain, which pilot-agent puts in its CSR.
var istioTD = spiffeid.RequireTrustDomainFromString("cluster.local")

// TestIstioPilotAgent is certmesh as a drop-in CA for an unmodified Istio data
// plane: the real certmesh binary runs in Kubernetes mode with --istio-compat
// against the real apiserver, and Istio's real pilot-agent, given only what
// Istio's injector gives a sidecar (CA_ADDR, the istio-ca token, the root from
// the istio-ca-root-cert ConfigMap, the pod's names), obtains its identity,
// serves it over its own SDS socket, and renews it before it expires. Tokens
// for the wrong audience or for a deleted pod are refused.
func TestIstioPilotAgent(t *testing.T) {
	pilotAgent := harness.Tool(t, "pilot-agent", "test/tools/pilot-agent.sh")
	caNS, ns := cluster.Namespace(t), cluster.Namespace(t)
	caAddr, metricsAddr := freeAddr(t), freeAddr(t)
	runCLI(t, "server", "--kubernetes", "--kubeconfig", cluster.Kubeconfig(t, nil), "--namespace", caNS,
		"--pod-name", "certmesh-0", "--trust-domain", istioTD.Name(), "--dir", filepath.Join(t.TempDir(), "server"),
		"--listen", caAddr, "--metrics", metricsAddr, "--istio-compat", "--token-audience", "istio-ca",
		"--svid-ttl", "1m", "--max-ttl", "1m").WaitLine(t, "certmesh CA for cluster.local", 60*time.Second)

	var root string
	harness.WaitFor(t, 30*time.Second, "istio-ca-root-cert ConfigMap", func() bool {
		cm, err := cluster.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), wire.IstioRootCertConfigMap, metav1.GetOptions{})
		if err == nil {
			root = cm.Data[wire.IstioRootCertKey]
		}
		return root != ""
	})
	own, err := bundleConfigMap(ns)
	require.NoError(t, err)
	require.Equal(t, own.Data[wire.TrustBundleKey], root, "both ConfigMaps hold the same bundle")
	bundle, err := x509bundle.Parse(istioTD, []byte(root))
	require.NoError(t, err)

	// The CA's port is "localhost:<port>": pilot-agent then verifies the
	// CA's certificate as istiod.istio-system.svc, as in a cluster.
	_, port, _ := net.SplitHostPort(caAddr)
	sidecar := func(name string, pod *podTokens) *istioSidecar {
		return startSidecar(t, pilotAgent, sidecarSpec{name: name, ns: ns, sa: pod.sa, pod: pod.pod, token: pod.token, root: root, caAddr: "localhost:" + port})
	}

	pod := cluster.Pod(t, ns, "productpage-0", "bookinfo-productpage", map[string]string{"app": "productpage"})
	good := sidecar("productpage-0", &podTokens{sa: "bookinfo-productpage", pod: pod.Name,
		token: cluster.ServiceAccountToken(t, ns, "bookinfo-productpage", "istio-ca", pod)})
	// Refused: a token for another audience, and one whose pod was deleted
	// before the token was ever reviewed.
	other := cluster.Pod(t, ns, "reviews-0", "bookinfo-reviews", nil)
	wrongAud := sidecar("reviews-0", &podTokens{sa: "bookinfo-reviews", pod: other.Name,
		token: cluster.ServiceAccountToken(t, ns, "bookinfo-reviews", "https://other.example", other)})
	gone := cluster.Pod(t, ns, "ratings-0", "bookinfo-ratings", nil)
	goneToken := cluster.ServiceAccountToken(t, ns, "bookinfo-ratings", "istio-ca", gone)
	require.NoError(t, cluster.Client.CoreV1().Pods(ns).Delete(context.Background(), gone.Name, metav1.DeleteOptions{}))
	deleted := sidecar("ratings-0", &podTokens{sa: "bookinfo-ratings", pod: gone.Name, token: goneToken})

	// The identity, served by pilot-agent's SDS server under Istio's names.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	certs := good.stream(ctx, t, "default")
	first := certs.next(t)
	want := spiffeid.RequireFromPath(istioTD, "/ns/"+ns+"/sa/bookinfo-productpage")
	require.Equal(t, want, first.ID)
	_, chains, err := x509svid.Verify(first.Certificates, bundle)
	require.NoError(t, err, "the SVID chains to certmesh's root")
	require.Equal(t, bundle.X509Authorities()[0].Raw, chains[0][len(chains[0])-1].Raw)
	roots := good.stream(ctx, t, "ROOTCA").nextRoots(t)
	require.True(t, bundle.Equal(x509bundle.FromX509Authorities(istioTD, roots)), "ROOTCA is certmesh's bundle")

	// Renewed before expiry: certmesh caps the lifetime at 1 minute, and
	// pilot-agent renews at half of it and pushes the new one on the stream.
	renewed := certs.next(t)
	require.Equal(t, want, renewed.ID)
	require.NotEqual(t, first.Certificates[0].SerialNumber, renewed.Certificates[0].SerialNumber)
	require.True(t, time.Now().Before(first.Certificates[0].NotAfter), "renewed before the first SVID expired")
	_, _, err = x509svid.Verify(renewed.Certificates, bundle)
	require.NoError(t, err)

	harness.WaitFor(t, 60*time.Second, "refusals of the wrong audience and the deleted pod", func() bool {
		m := scrape(t, metricsAddr)
		return strings.Contains(m, `certmesh_ca_refusals_total{reason="k8s_wrong_audience"}`) &&
			strings.Contains(m, `certmesh_ca_refusals_total{reason="k8s_pod_gone"}`)
	})
	for _, s := range []*istioSidecar{wrongAud, deleted} {
		require.NotContains(t, s.proc.Output(), "spiffe://cluster.local/ns/"+ns+"/sa/", "%s got no certificate", s.name)
		_, err := os.Stat(filepath.Join(s.dir, "certs", "cert-chain.pem"))
		require.ErrorIs(t, err, os.ErrNotExist, "%s wrote no certificate", s.name)
	}
	_, err = os.Stat(filepath.Join(good.dir, "certs", "cert-chain.pem"))
	require.NoError(t, err)
}

type podTokens struct{ sa, pod, token string }

type sidecarSpec struct {
	name, ns, sa, pod, token, root, caAddr string
}

// istioSidecar is one pilot-agent in a working directory laid out as the
// injector lays out a sidecar's volumes.
type istioSidecar struct {
	name string
	dir  string
	proc *harness.Proc
}

// startSidecar runs pilot-agent with the environment Istio's injector sets
// (plus CLOUD_PLATFORM=none, and a stand-in for Envoy: none is installed
// here, and pilot-agent serves SDS only while it runs its proxy).
func startSidecar(t *testing.T, bin string, s sidecarSpec) *istioSidecar {
	t.Helper()
	dir := t.TempDir()
	tmpl, err := os.ReadFile(filepath.Join(filepath.Dir(bin), "pilot-agent-envoy_bootstrap.json"))
	require.NoError(t, err, "the bootstrap template of Istio's image: run test/tools/pilot-agent.sh")
	for path, content := range map[string]string{
		"var/run/secrets/tokens/istio-token":            s.token,
		"var/run/secrets/istio/root-cert.pem":           s.root,
		"var/lib/istio/envoy/envoy_bootstrap_tmpl.json": string(tmpl),
		"envoy": "#!/bin/sh\nexec sleep 3600\n",
	} {
		p := filepath.Join(dir, path)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o755))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "certs"), 0o755))
	_, status, _ := net.SplitHostPort(freeAddr(t))
	_, admin, _ := net.SplitHostPort(freeAddr(t))
	proxyConfig := fmt.Sprintf(`{"discoveryAddress":%q,"binaryPath":%q,"configPath":%q,"statusPort":%s,"proxyAdminPort":%s}`,
		s.caAddr, filepath.Join(dir, "envoy"), filepath.Join(dir, "etc/istio/proxy"), status, admin)
	env := []string{
		"CA_ADDR=" + s.caAddr, "PROXY_CONFIG=" + proxyConfig, "JWT_POLICY=third-party-jwt", "PILOT_CERT_PROVIDER=istiod",
		"POD_NAME=" + s.pod, "POD_NAMESPACE=" + s.ns, "SERVICE_ACCOUNT=" + s.sa, "INSTANCE_IP=127.0.0.1", "HOST_IP=127.0.0.1",
		"ISTIO_META_CLUSTER_ID=Kubernetes", "ISTIO_META_MESH_ID=cluster.local", "TRUST_DOMAIN=cluster.local",
		"ISTIO_META_WORKLOAD_NAME=" + s.pod, "ISTIO_META_INTERCEPTION_MODE=REDIRECT",
		"OUTPUT_CERTS=" + filepath.Join(dir, "certs"), "CLOUD_PLATFORM=none",
	}
	p := harness.Start(t, harness.Spec{Name: "pilot-agent " + s.name, Path: bin, Args: []string{"proxy", "sidecar"}, Dir: dir, Env: env})
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(p)
		}
	})
	return &istioSidecar{name: s.name, dir: dir, proc: p}
}

// sdsStream is one SDS stream to pilot-agent, as Envoy opens it: one
// resource, every response ACKed.
type sdsStream struct {
	name   string
	stream secretv3.SecretDiscoveryService_StreamSecretsClient
}

func (s *istioSidecar) stream(ctx context.Context, t *testing.T, name string) *sdsStream {
	t.Helper()
	socket := filepath.Join(s.dir, "var/run/secrets/workload-spiffe-uds/socket")
	harness.WaitFor(t, 60*time.Second, "pilot-agent's SDS socket", func() bool {
		st, err := os.Stat(socket)
		return err == nil && st.Mode()&os.ModeSocket != 0
	})
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	require.NoError(t, err)
	ss := &sdsStream{name: name, stream: stream}
	ss.send(t, "", "")
	return ss
}

func (s *sdsStream) send(t *testing.T, version, nonce string) {
	t.Helper()
	require.NoError(t, s.stream.Send(&discoveryv3.DiscoveryRequest{
		Node:          &corev3.Node{Id: "sidecar~127.0.0.1~pod~ns.svc.cluster.local", Cluster: "productpage"},
		TypeUrl:       "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
		ResourceNames: []string{s.name}, VersionInfo: version, ResponseNonce: nonce,
	}))
}

// recv waits for the next response carrying the secret, and ACKs it.
func (s *sdsStream) recv(t *testing.T) *tlsv3.Secret {
	t.Helper()
	resp, err := s.stream.Recv()
	require.NoError(t, err)
	s.send(t, resp.GetVersionInfo(), resp.GetNonce())
	require.Len(t, resp.GetResources(), 1)
	var sec tlsv3.Secret
	require.NoError(t, resp.GetResources()[0].UnmarshalTo(&sec))
	require.Equal(t, s.name, sec.GetName())
	return &sec
}

// next is the next SVID served. The key must match the certificate
// (pilot-agent's is PKCS#1 RSA, which x509svid.Parse does not read).
func (s *sdsStream) next(t *testing.T) *x509svid.SVID {
	t.Helper()
	tc := s.recv(t).GetTlsCertificate()
	pair, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	require.NoError(t, err, "key and certificate match")
	svid := &x509svid.SVID{PrivateKey: pair.PrivateKey.(crypto.Signer)}
	for _, der := range pair.Certificate {
		c, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		svid.Certificates = append(svid.Certificates, c)
	}
	svid.ID, err = x509svid.IDFromCert(svid.Certificates[0])
	require.NoError(t, err)
	return svid
}

// nextRoots is the next validation context's trusted CAs.
func (s *sdsStream) nextRoots(t *testing.T) []*x509.Certificate {
	t.Helper()
	b, err := x509bundle.Parse(istioTD, s.recv(t).GetValidationContext().GetTrustedCa().GetInlineBytes())
	require.NoError(t, err)
	return b.X509Authorities()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lis.Close()
	return "127.0.0.1:" + strconv.Itoa(lis.Addr().(*net.TCPAddr).Port)
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
