// Package kubetest runs a real kube-apiserver and etcd on loopback for
// certmesh's Kubernetes integration tests. The binaries come from
// test/tools/kube.sh (built once, cached outside the repository); a test fails
// with a pointer to that script when they are missing.
//
// The cluster has no controller-manager, scheduler or kubelet: namespaces
// never finish terminating (Namespace returns unique names), pods stay
// Pending, and Namespace creates the "default" ServiceAccount itself because
// no controller does.
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Versions of the binaries test/tools/kube.sh builds.
const (
	KubeVersion = "v1.37.2"
	EtcdVersion = "v3.7.3"
)

// installHint is appended to every "binary missing" failure.
const installHint = "run test/tools/kube.sh (or make test, which runs test/tools/install.sh) to build kube-apiserver and etcd"

// Cluster is a running etcd + kube-apiserver pair.
type Cluster struct {
	// Config authenticates as a cluster admin (system:masters).
	Config *rest.Config
	// Client is a clientset for Config.
	Client kubernetes.Interface
	// Host is the apiserver's https URL (https://127.0.0.1:PORT).
	Host string
	// Dir holds the certificates, keys, etcd data and process logs.
	Dir string

	pki     *pki
	etcd    *process
	api     *process
	nsCount atomic.Int64
	stopped atomic.Bool
}

// Option adjusts the cluster's start.
type Option func(*options)

type options struct {
	binDir     string
	extraFlags []string
	timeout    time.Duration
}

// WithAPIServerFlags appends flags to kube-apiserver's command line (a later
// flag overrides an earlier one).
func WithAPIServerFlags(flags ...string) Option {
	return func(o *options) { o.extraFlags = append(o.extraFlags, flags...) }
}

// WithBinDir takes the binaries from dir instead of kube.sh's cache.
func WithBinDir(dir string) Option { return func(o *options) { o.binDir = dir } }

// WithStartTimeout bounds the wait for the apiserver's /readyz (default 60 s).
func WithStartTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// BinDir is where test/tools/kube.sh puts the binaries.
func BinDir() string {
	base := os.Getenv("CERTMESH_KUBE_CACHE")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache", "certmesh", "kube")
	}
	return filepath.Join(base, KubeVersion)
}

// Start runs a fresh cluster for t and stops it in t.Cleanup. Startup costs
// about 3 s; packages with many tests share one through RunMain.
func Start(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	c, err := start(t.TempDir(), opts...)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

// RunMain starts one cluster, stores it in *c, runs the package's tests and
// stops the cluster. Use it from TestMain:
//
//	var cluster *kubetest.Cluster
//	func TestMain(m *testing.M) { os.Exit(kubetest.RunMain(m, &cluster)) }
//
// A cluster that cannot start fails the package (exit code 1), never skips it.
func RunMain(m *testing.M, c **Cluster, opts ...Option) int {
	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubetest: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	cl, err := start(dir, opts...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubetest: %v\n", err)
		return 1
	}
	*c = cl
	code := m.Run()
	cl.Stop()
	return code
}

func start(dir string, opts ...Option) (_ *Cluster, err error) {
	o := options{binDir: BinDir(), timeout: 60 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := exec.LookPath(filepath.Join(o.binDir, bin)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: %s", bin, o.binDir, installHint)
		}
	}
	c := &Cluster{Dir: dir}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if c.pki, err = newPKI(dir); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	etcdURL, err := c.startEtcd(ctx, o)
	if err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx, o, etcdURL); err != nil {
		return nil, err
	}
	return c, nil
}

// Stop ends kube-apiserver, then etcd. It is safe to call more than once.
func (c *Cluster) Stop() {
	if c.stopped.Swap(true) {
		return
	}
	var errs []error
	for _, p := range []*process{c.api, c.etcd} {
		if p != nil {
			errs = append(errs, p.stop())
		}
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(os.Stderr, "kubetest: stop: %v\n", err)
	}
}
