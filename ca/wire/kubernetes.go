package wire

// Names of the per-namespace ConfigMap that the CA server publishes (ca/k8s) and that
// injected pods mount (sds/inject).
const (
	// TrustBundleConfigMap is the ConfigMap the server keeps in every namespace.
	TrustBundleConfigMap = "certmesh-trust-bundle"
	// TrustBundleKey holds the trust bundle (PEM) in TrustBundleConfigMap.
	TrustBundleKey = "ca.crt"
)
