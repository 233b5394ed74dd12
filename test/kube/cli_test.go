package kube_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/edge/ingress"
	"github.com/certmesh/certmesh/edge/pebbletest"
	"github.com/certmesh/certmesh/test/harness"
)

// runCLI starts the certmesh binary; it is stopped when the test ends.
func runCLI(t *testing.T, args ...string) *harness.Proc {
	t.Helper()
	return runCLIEnv(t, nil, args...)
}

// runCLIEnv is runCLI with extra environment variables.
func runCLIEnv(t *testing.T, env []string, args ...string) *harness.Proc {
	t.Helper()
	return harness.Start(t, harness.Spec{Name: "certmesh " + args[0], Path: harness.Binary(t), Args: args, Env: env})
}

// TestCLI runs the real binaries: `certmesh server --kubernetes` against the
// apiserver and `certmesh agent --token-file` bootstrapped from the bundle
// ConfigMap the server publishes; a workload in the pod then gets the
// pod's ServiceAccount identity over the Workload API.
func TestCLI(t *testing.T) {
	ns := cluster.Namespace(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	dir := t.TempDir()
	server := runCLI(t, "server", "--kubernetes", "--kubeconfig", cluster.Kubeconfig(t, nil), "--namespace", ns,
		"--pod-name", "certmesh-0", "--trust-domain", "example.org", "--dir", filepath.Join(dir, "server"), "--listen", addr)
	server.WaitLine(t, "certmesh CA for example.org", 60*time.Second)

	var bundle string
	harness.WaitFor(t, 30*time.Second, "bundle ConfigMap", func() bool {
		cm, err := bundleConfigMap(ns)
		if err == nil {
			bundle = cm.Data[wire.TrustBundleKey]
		}
		return bundle != ""
	})
	bundleFile := filepath.Join(dir, "bundle.pem")
	require.NoError(t, os.WriteFile(bundleFile, []byte(bundle), 0o600))
	pod := cluster.Pod(t, ns, "app-0", "app", map[string]string{"app": "app"})
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(cluster.ServiceAccountToken(t, ns, "app", audience, pod)), 0o600))
	socket := filepath.Join(dir, "agent.sock")
	agent := runCLI(t, "agent", "--server", addr, "--trust-domain", "example.org", "--trust-bundle", bundleFile,
		"--token-file", tokenFile, "--socket", socket)
	agent.WaitLine(t, "SPIFFE_ENDPOINT_SOCKET=", 60*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+socket))
	require.NoError(t, err)
	require.Equal(t, "spiffe://example.org/ns/"+ns+"/sa/app", svid.ID.String())
}

// TestCLIIngressAndGatewayStatus runs `certmesh server --kubernetes --ingress` as
// a user would (the Gateway API installed) and reads `certmesh status`: an
// annotated Ingress and an annotated Gateway each get a Pebble certificate, and
// the status table names both with their owner and issuer.
func TestCLIIngressAndGatewayStatus(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{})
	ns := cluster.Namespace(t)
	installGatewayAPI(t)
	require.Eventually(t, func() bool { return gatewaysServed(t) }, 30*time.Second, 100*time.Millisecond)
	issuers := fmt.Sprintf("pebble:\n  directory: %s\n  email: ops@example.com\n  caBundle: |\n%s", p.DirectoryURL,
		indent(string(p.TLSRoot), "    "))
	_, err := cluster.Client.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: ingress.IssuersConfigMap, Namespace: ns},
		Data:       map[string]string{ingress.IssuersKey: issuers},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	dir := filepath.Join(t.TempDir(), "server")
	// Pebble's VA connects to the host's HTTP-01 port on 127.0.0.1, where the
	// solver listens (there is no ingress controller to follow the routes); the
	// solver objects need the pod IP the downward API would give.
	server := runCLIEnv(t, []string{"POD_IP=10.1.2.3"}, "server", "--kubernetes", "--kubeconfig", cluster.Kubeconfig(t, nil),
		"--namespace", ns, "--pod-name", "certmesh-0", "--trust-domain", "example.org", "--dir", dir, "--listen", addr,
		"--ingress", "--http01-addr", "127.0.0.1:"+strconv.Itoa(p.HTTPPort), "--http01-self-check=false")
	server.WaitLine(t, "certmesh CA for example.org", 60*time.Second)

	r := &ingressRig{p: p, appNS: ns}
	r.createIngress(t, "web", "web-tls", map[string]string{ingress.AnnotationIssuer: "pebble"}, "web.cli.example.test")
	admin, err := gatewayclient.NewForConfig(cluster.Config)
	require.NoError(t, err)
	createGateway(t, admin, shopGateway(ns, "edge", "shop.cli.example.test", "shop-tls"))
	for _, secret := range []string{"web-tls", "shop-tls"} {
		require.Eventually(t, func() bool {
			s, err := cluster.Client.CoreV1().Secrets(ns).Get(context.Background(), secret, metav1.GetOptions{})
			return err == nil && len(s.Data[corev1.TLSCertKey]) > 0
		}, 90*time.Second, 50*time.Millisecond, "Secret %s", secret)
	}

	var out string
	require.Eventually(t, func() bool {
		b, err := exec.Command(harness.Binary(t), "status", "--dir", dir).CombinedOutput()
		out = string(b)
		return err == nil && strings.Contains(out, "Gateway "+ns+"/edge") && strings.Contains(out, "Ingress "+ns+"/web")
	}, 30*time.Second, 200*time.Millisecond, "certmesh status:\n%s", out)
	require.Regexp(t, `(?m)^`+ns+`/web-tls\s+Ingress `+ns+`/web\s+pebble\s+\d{4}-\d\d-\d\dT\S+\s+\d{4}-\d\d-\d\dT\S+\s+-$`, out)
	require.Regexp(t, `(?m)^`+ns+`/shop-tls\s+Gateway `+ns+`/edge\s+pebble\s+\d{4}-\d\d-\d\dT\S+\s+\d{4}-\d\d-\d\dT\S+\s+-$`, out)
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n") + "\n"
}
