package wire

// Names of the per-namespace ConfigMap that the CA server publishes (ca/k8s) and that
// injected pods mount (sds/inject).
const (
	// TrustBundleConfigMap is the ConfigMap the server keeps in every namespace.
	TrustBundleConfigMap = "certmesh-trust-bundle"
	// TrustBundleKey holds the trust bundle (PEM) in TrustBundleConfigMap.
	TrustBundleKey = "ca.crt"
)

// Names Istio's data plane expects of its CA (certmesh server --istio-compat).
const (
	// IstioRootCertConfigMap is the ConfigMap injected Istio sidecars mount the
	// CA root from, in their own namespace.
	IstioRootCertConfigMap = "istio-ca-root-cert"
	// IstioRootCertKey holds the trust bundle (PEM) in IstioRootCertConfigMap.
	IstioRootCertKey = "root-cert.pem"
	// IstioCAServiceName is the name Istio's pilot-agent verifies its CA's
	// serving certificate against (its default CA_ADDR is
	// istiod.istio-system.svc:15012).
	IstioCAServiceName = "istiod.istio-system.svc"
)
