package kubetest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// DefaultTokenTTL is the lifetime ServiceAccountToken asks for; the
// apiserver's minimum is 10 minutes.
const DefaultTokenTTL = time.Hour

func (c *Cluster) ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Namespace creates a namespace with a unique name (namespaces never finish
// terminating here, so names are never reused) and its "default"
// ServiceAccount, which no controller creates in this cluster.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	prefix := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(t.Name()))
	if len(prefix) > 40 {
		prefix = prefix[:40]
	}
	name := fmt.Sprintf("%s-%d", strings.Trim(prefix, "-"), c.nsCount.Add(1))
	ctx := c.ctx(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubetest: create namespace %s: %v", name, err)
	}
	c.ServiceAccount(t, name, "default")
	return name
}

// ServiceAccount creates ns/name unless it exists.
func (c *Cluster) ServiceAccount(t testing.TB, ns, name string) *corev1.ServiceAccount {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	got, err := c.Client.CoreV1().ServiceAccounts(ns).Create(c.ctx(t), sa, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = c.Client.CoreV1().ServiceAccounts(ns).Get(c.ctx(t), name, metav1.GetOptions{})
	}
	if err != nil {
		t.Fatalf("kubetest: service account %s/%s: %v", ns, name, err)
	}
	return got
}

// Pod creates a pod (it stays Pending: there is no scheduler) running as
// ServiceAccount sa, with labels, and returns the stored object.
func (c *Cluster) Pod(t testing.TB, ns, name, sa string, labels map[string]string) *corev1.Pod {
	t.Helper()
	c.ServiceAccount(t, ns, sa)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
		},
	}
	got, err := c.Client.CoreV1().Pods(ns).Create(c.ctx(t), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: create pod %s/%s: %v", ns, name, err)
	}
	return got
}

// ServiceAccountToken gets a token for ns/sa with the TokenRequest API, as
// the kubelet does for a projected volume. With pod set, the token is bound
// to the pod: it stops being valid when the pod is deleted. The
// ServiceAccount is created if it does not exist.
func (c *Cluster) ServiceAccountToken(t testing.TB, ns, sa, audience string, pod *corev1.Pod) string {
	t.Helper()
	c.ServiceAccount(t, ns, sa)
	ttl := int64(DefaultTokenTTL / time.Second)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl}}
	if audience != "" {
		req.Spec.Audiences = []string{audience}
	}
	if pod != nil {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	got, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(c.ctx(t), sa, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: TokenRequest for %s/%s: %v", ns, sa, err)
	}
	return got.Status.Token
}

// UserConfig is a rest.Config that authenticates as user in groups, for
// running a component with only the RBAC permissions it is granted (the
// cluster authorizes with RBAC; Config is a system:masters superuser).
func (c *Cluster) UserConfig(t testing.TB, user string, groups ...string) *rest.Config {
	t.Helper()
	cfg, err := c.pki.clientConfig(c.Host, user, groups...)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return cfg
}

// ServiceAccountConfig is UserConfig for ServiceAccount ns/sa, with the
// groups the apiserver gives ServiceAccounts.
func (c *Cluster) ServiceAccountConfig(t testing.TB, ns, sa string) *rest.Config {
	t.Helper()
	return c.UserConfig(t, "system:serviceaccount:"+ns+":"+sa, "system:serviceaccounts", "system:serviceaccounts:"+ns, "system:authenticated")
}

// NewClient builds a clientset for cfg, failing t on error.
func NewClient(t testing.TB, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("kubetest: clientset: %v", err)
	}
	return cs
}

// Kubeconfig writes a kubeconfig file for cfg (default: the admin Config)
// into a temporary directory, for running certmesh or kubectl-like tools as
// processes, and returns its path.
func (c *Cluster) Kubeconfig(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	if cfg == nil {
		cfg = c.Config
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "user"}
	kc.CurrentContext = "kubetest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatalf("kubetest: write kubeconfig: %v", err)
	}
	return path
}
