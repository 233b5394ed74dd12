package kubetest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
)

// process is one child process whose output goes to a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

func startProcess(name, bin, logPath string, args ...string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); logFile.Close() }()
	return p, nil
}

// stop sends SIGTERM, waits up to 10 s, then kills.
func (p *process) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s did not stop on SIGTERM; killed", p.name)
}

// exited reports the process's exit and the end of its log, for start errors.
func (p *process) exited() error {
	select {
	case err := <-p.done:
		p.done <- err
		return fmt.Errorf("%s exited (%v); log %s ends:\n%s", p.name, err, p.log, tail(p.log, 30))
	default:
		return nil
	}
}

func tail(path string, lines int) string {
	b, _ := os.ReadFile(path)
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// freePort asks the kernel for an unused loopback port. Another process could
// take it before the child binds; the window is tiny on a test machine.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) startEtcd(ctx context.Context, o options) (string, error) {
	clientPort, err := freePort()
	if err != nil {
		return "", err
	}
	peerPort, err := freePort()
	if err != nil {
		return "", err
	}
	clientURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	c.etcd, err = startProcess("etcd", filepath.Join(o.binDir, "etcd"), filepath.Join(c.Dir, "etcd.log"),
		"--name=kubetest", "--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+clientURL, "--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=kubetest="+peerURL, "--unsafe-no-fsync", "--log-level=warn",
	)
	if err != nil {
		return "", err
	}
	return clientURL, waitFor(ctx, c.etcd, func() bool {
		resp, err := http.Get(clientURL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func (c *Cluster) startAPIServer(ctx context.Context, o options, etcdURL string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	c.Host = "https://127.0.0.1:" + strconv.Itoa(port)
	p := c.pki
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
		"--tls-cert-file=" + p.path("apiserver.crt"), "--tls-private-key-file=" + p.path("apiserver.key"),
		"--client-ca-file=" + p.path("ca.crt"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saPubPath, "--service-account-signing-key-file=" + p.saKeyPath,
		"--authorization-mode=RBAC", "--allow-privileged=true",
		"--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
		"--cert-dir=" + filepath.Join(c.Dir, "apiserver-certs"),
		"--enable-priority-and-fairness=false", "--profiling=false", "--v=1",
	}
	args = append(args, o.extraFlags...)
	if c.api, err = startProcess("kube-apiserver", filepath.Join(o.binDir, "kube-apiserver"), filepath.Join(c.Dir, "kube-apiserver.log"), args...); err != nil {
		return err
	}
	if c.Config, err = p.clientConfig(c.Host, "kubetest-admin", "system:masters"); err != nil {
		return err
	}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	return waitFor(ctx, c.api, func() bool {
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok"
	})
}

// waitFor polls ready every 50 ms until it holds, the process exits, or ctx ends.
func waitFor(ctx context.Context, p *process, ready func() bool) error {
	for {
		if err := p.exited(); err != nil {
			return err
		}
		if ready() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w; log %s ends:\n%s", p.name, ctx.Err(), p.log, tail(p.log, 30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
