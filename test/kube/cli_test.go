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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"

	cak8s "github.com/certmesh/certmesh/ca/k8s"
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
	cmd := exec.Command(certmeshBinary(t), args...)
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
			bundle = cm.Data[cak8s.BundleKey]
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
