package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	cak8s "github.com/certmesh/certmesh/ca/k8s"
	"github.com/certmesh/certmesh/ca/server"
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
	watchServices     bool
	watchPods         bool
	pluginSecret      string
	pluginFormat      string
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
	fs.StringVar(&k.pluginSecret, "plugin-ca-secret", "", "sign with the operator's CA from this Secret in --namespace (Istio's cacerts, or a kubernetes.io/tls Secret with ca.crt); its changes are rolled in")
	fs.StringVar(&k.pluginFormat, "plugin-ca-format", "auto", "layout of --plugin-ca-secret: istio (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem), tls (tls.crt, tls.key, ca.crt), or auto (istio when ca-cert.pem is present)")
	fs.BoolVar(&k.watchPods, "watch-pods", true, "keep every pod's name, UID and labels in a watch cache (about 1 KB per pod) instead of getting the token's pod for every uncached token review; needs pods list/watch")
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

// config is the server's Kubernetes configuration when --kubernetes is set
// (nil otherwise): the server makes its clients from the REST config.
func (k *kubeFlags) config() (*server.KubernetesConfig, error) {
	if !k.enabled {
		if k.pluginSecret != "" {
			return nil, errors.New("--plugin-ca-secret needs --kubernetes")
		}
		return nil, nil
	}
	rc, err := k.restConfig()
	if err != nil {
		return nil, err
	}
	rc.UserAgent = "certmesh/" + version
	kc := &server.KubernetesConfig{
		REST: rc, Namespace: k.resolveNamespace(), Identity: k.resolvePodName(),
		SecretName: k.caSecret, LeaseName: k.lease, DisableBundlePublication: k.noBundles,
		ServiceAccountTokens: &k8sid.Config{
			Audience: k.audience, ClusterDomain: k.clusterDomain,
			Policy:        k8sid.Policy{ExcludedNamespaces: splitList(k.excludeNamespaces), ExcludedServiceAccounts: splitList(k.excludeSAs)},
			WatchServices: k.watchServices, WatchPods: k.watchPods,
		},
	}
	if k.pluginSecret != "" {
		f, err := cak8s.ParsePluginFormat(k.pluginFormat)
		if err != nil {
			return nil, fmt.Errorf("--plugin-ca-format: %w", err)
		}
		kc.PluginCA = &server.PluginCAConfig{Secret: k.pluginSecret, Format: f}
	}
	return kc, nil
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

// meshFlags add, in Kubernetes mode, the Ingress (and Gateway) certificate
// controller and the sidecar-injecting webhook to `certmesh server`.
type meshFlags struct {
	ingress       bool
	gatewayAPI    bool
	selfCheck     bool
	webhookAddr   string
	webhookDNS    string
	serverAddress string
	agentImage    string
	envoyImage    string
}

func (m *meshFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&m.ingress, "ingress", false, "obtain ACME certificates for annotated Ingresses (needs --kubernetes; HTTP-01 on --http01-addr)")
	fs.BoolVar(&m.gatewayAPI, "gateway-api", true, "with --ingress, also obtain certificates for annotated Gateway API Gateways once the Gateway API CRDs are served")
	fs.BoolVar(&m.selfCheck, "http01-self-check", true, "fetch each HTTP-01 challenge through the ingress before the CA validates it (off where the cluster cannot reach its own public names)")
	fs.StringVar(&m.webhookAddr, "webhook-addr", "", "serve the sidecar-injecting admission webhook on this address, e.g. :9443 (needs --kubernetes)")
	fs.StringVar(&m.webhookDNS, "webhook-dns", "certmesh-webhook.certmesh.svc", "DNS name in the webhook's serving certificate")
	fs.StringVar(&m.serverAddress, "server-address", "certmesh.certmesh.svc:8443", "CA address injected agents connect to")
	fs.StringVar(&m.agentImage, "agent-image", "ghcr.io/certmesh/certmesh:"+version, "image of the injected agent")
	fs.StringVar(&m.envoyImage, "envoy-image", "envoyproxy/envoy:v1.36.2", "image of the injected Envoy")
}

// config is what the flags ask for (nil parts when not). http01Addr is the edge flag.
func (m *meshFlags) config(kubernetes bool, http01Addr string) (*server.IngressConfig, *server.WebhookConfig, error) {
	if !m.ingress && m.webhookAddr == "" {
		return nil, nil, nil
	}
	if !kubernetes {
		return nil, nil, errors.New("--ingress and --webhook-addr need --kubernetes")
	}
	var ic *server.IngressConfig
	if m.ingress {
		ic = &server.IngressConfig{
			GatewayAPI: m.gatewayAPI, SelfCheck: m.selfCheck, SolverPodIP: os.Getenv("POD_IP"),
			HTTP01Addr: http01Addr, DNSProviders: dnsProviders(),
		}
	}
	var wc *server.WebhookConfig
	if m.webhookAddr != "" {
		wc = &server.WebhookConfig{
			Addr: m.webhookAddr, DNSName: m.webhookDNS, ServerAddress: m.serverAddress,
			AgentImage: m.agentImage, EnvoyImage: m.envoyImage,
		}
	}
	return ic, wc, nil
}
