package kube_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// certmeshBinary builds cmd/certmesh once per package run.
func certmeshBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "certmesh-kube-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "certmesh")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/certmesh/certmesh/cmd/certmesh").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build cmd/certmesh: %w\n%s", err, out)
		}
	})
	require.NoError(t, binErr)
	return binPath
}

// runCLI starts the binary, stopped with SIGTERM in t.Cleanup, and returns a
// channel of its stdout lines.
func runCLI(t *testing.T, args ...string) <-chan string {
	t.Helper()
	return runCLIEnv(t, nil, args...)
}

// runCLIEnv is runCLI with extra environment variables.
func runCLIEnv(t *testing.T, env []string, args ...string) <-chan string {
	t.Helper()
	cmd := exec.Command(certmeshBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = io.Discard
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	require.NoError(t, cmd.Start())
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return lines
}

func waitLine(t *testing.T, lines <-chan string, prefix string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "process exited before printing %q", prefix)
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("no line starting with %q within 60 s", prefix)
		}
	}
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
	waitLine(t, server, "certmesh CA for example.org")

	var bundle string
	waitFor(t, 30*time.Second, "bundle ConfigMap", func() bool {
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
	waitLine(t, agent, "SPIFFE_ENDPOINT_SOCKET=")

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
	waitLine(t, server, "certmesh CA for example.org")

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
		b, err := exec.Command(certmeshBinary(t), "status", "--dir", dir).CombinedOutput()
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
