package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/identity"
	k8sid "github.com/certmesh/certmesh/identity/k8s"
)

// inClusterNamespaceFile is where a pod finds its own namespace.
const inClusterNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// kubeFlags turn `certmesh server` into one replica of a Kubernetes control
// plane: ServiceAccount-token attestation, CA state in a Secret, leader
// election, trust bundle publication.
type kubeFlags struct {
	enabled           bool
	kubeconfig        string
	namespace         string
	podName           string
	audience          string
	excludeNamespaces string
	excludeSAs        string
	caSecret          string
	lease             string
	clusterDomain     string
	noBundles         bool
	envoyBootstrap    string
	watchServices     bool
	watchPods         bool

	rest     *rest.Config    // set by apply: clients for other APIs (the Gateway API) share it
	attestor *k8sid.Attestor // set by apply: its Run keeps the Service and Pod caches
}

func (k *kubeFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&k.enabled, "kubernetes", false, "run in Kubernetes: ServiceAccount tokens, CA in a Secret, leader election, bundle ConfigMaps")
	fs.StringVar(&k.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (default: in-cluster configuration)")
	fs.StringVar(&k.namespace, "namespace", "", "namespace of the CA Secret and the leader Lease (default: $POD_NAMESPACE, the pod's namespace, else certmesh)")
	fs.StringVar(&k.podName, "pod-name", "", "this replica's name in the Lease (default: $POD_NAME, else the hostname)")
	fs.StringVar(&k.audience, "token-audience", "", "audience ServiceAccount tokens must carry (default: spiffe://<trust domain>)")
	fs.StringVar(&k.excludeNamespaces, "exclude-namespaces", "", "comma-separated namespaces whose ServiceAccounts get no identity")
	fs.StringVar(&k.excludeSAs, "exclude-service-accounts", "", "comma-separated namespace/name ServiceAccounts that get no identity")
	fs.StringVar(&k.caSecret, "ca-secret", "", "name of the Secret holding the CA (default certmesh-ca)")
	fs.StringVar(&k.lease, "leader-lease", "", "name of the leader election Lease (default certmesh-leader)")
	fs.StringVar(&k.clusterDomain, "cluster-domain", k8sid.DefaultClusterDomain, "cluster DNS domain for Service names in SVIDs")
	fs.BoolVar(&k.noBundles, "no-bundle-publication", false, "do not publish the trust bundle as ConfigMaps/ClusterTrustBundle")
	fs.BoolVar(&k.watchServices, "watch-services", true, "keep Service selectors in a watch cache (one watch per replica) instead of listing a namespace's Services for every uncached token review")
	fs.BoolVar(&k.watchPods, "watch-pods", true, "keep every pod's name, UID and labels in a watch cache (about 1 KB per pod) instead of getting the token's pod for every uncached token review; needs pods list/watch")
	fs.StringVar(&k.envoyBootstrap, "envoy-bootstrap", "", "sidecar Envoy bootstrap (deploy/envoy/sidecar.yaml) to publish in every namespace beside the bundle, for injected pods")
}

// restConfig loads --kubeconfig, else the in-cluster configuration.
func (k *kubeFlags) restConfig() (*rest.Config, error) {
	if k.kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", k.kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", k.kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("--kubernetes: not in a cluster and no --kubeconfig: %w", err)
	}
	return cfg, nil
}

func (k *kubeFlags) resolveNamespace() string {
	if k.namespace != "" {
		return k.namespace
	}
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile(inClusterNamespaceFile); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b))
	}
	return "certmesh"
}

func (k *kubeFlags) resolvePodName() string {
	if k.podName != "" {
		return k.podName
	}
	if n := os.Getenv("POD_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return h
}

// apply adds the Kubernetes parts to cfg when --kubernetes is set.
func (k *kubeFlags) apply(cfg *server.Config, log *slog.Logger) error {
	if !k.enabled {
		return nil
	}
	rc, err := k.restConfig()
	if err != nil {
		return err
	}
	rc.UserAgent = "certmesh/" + version
	k.rest = rc
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("--kubernetes: %w", err)
	}
	meta, err := metadata.NewForConfig(rc) // the Pod watch asks for pods' metadata only
	if err != nil {
		return fmt.Errorf("--kubernetes: %w", err)
	}
	att, err := k8sid.New(k8sid.Config{
		Client: client, TrustDomain: cfg.TrustDomain, Audience: k.audience, ClusterDomain: k.clusterDomain,
		Policy:        k8sid.Policy{ExcludedNamespaces: splitList(k.excludeNamespaces), ExcludedServiceAccounts: splitList(k.excludeSAs)},
		WatchServices: k.watchServices, WatchPods: k.watchPods, Metadata: meta, Clock: cfg.Clock, Logger: log,
	})
	if err != nil {
		return err
	}
	k.attestor = att
	cfg.Attestors = append(cfg.Attestors, identity.Attestor(att))
	cfg.Kubernetes = &server.KubernetesConfig{
		Client: client, Namespace: k.resolveNamespace(), Identity: k.resolvePodName(),
		SecretName: k.caSecret, LeaseName: k.lease, DisableBundlePublication: k.noBundles,
	}
	if k.envoyBootstrap != "" {
		b, err := os.ReadFile(k.envoyBootstrap)
		if err != nil {
			return fmt.Errorf("--envoy-bootstrap: %w", err)
		}
		cfg.Kubernetes.EnvoyBootstrap = b
	}
	log.Info("Kubernetes mode", "namespace", cfg.Kubernetes.Namespace, "identity", cfg.Kubernetes.Identity, "token_audience", att.Audience())
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
