// Package inject is certmesh's mutating admission webhook: it adds the sidecars of
// the mesh to pods that opt in — the certmesh agent and an Envoy whose bootstrap
// talks SDS to the agent over a unix socket in a shared emptyDir — plus the projected
// ServiceAccount token the agent authenticates with. Each pod's Envoy bootstrap is
// rendered from the pod (its declared ports and the annotations in annotations.go)
// and the server's trust domain, validated against Envoy's protos, and passed to
// Envoy inline (--config-yaml). The decision and the patch are pure functions of the
// pod and its namespace's labels; the HTTP handler only decodes the AdmissionReview,
// asks them, and encodes the answer.
//
// Failure policy: the shipped MutatingWebhookConfiguration uses failurePolicy Fail.
// A pod that opted in and started without its sidecars would talk plaintext and hold
// no identity: a silent downgrade of exactly what the user asked for. A failed create
// is loud, and the ReplicaSet (or Job...) retries it with backoff. To keep that from
// blocking the cluster, the webhook only sees pods that opted in (namespace and object
// selectors), never certmesh's own namespace or kube-system, runs with 2 replicas and
// a PodDisruptionBudget, and answers within a 5 s timeout.
package inject

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"

	"github.com/certmesh/certmesh/ca/wire"
)

// Opt-in label and annotation; the namespace label enables a whole namespace, the pod
// label or annotation decides for one pod ("disabled" wins over the namespace).
const (
	LabelInject        = "certmesh.io/inject"
	InjectEnabled      = "enabled"
	InjectDisabled     = "disabled"
	AnnotationInjected = "certmesh.io/injected"
)

// Names of what is injected.
const (
	AgentContainer = "certmesh-agent"
	EnvoyContainer = "certmesh-envoy"
	SocketVolume   = "certmesh-socket"
	TokenVolume    = "certmesh-token"
	BundleVolume   = "certmesh-trust-bundle"
	SocketDir      = "/var/run/certmesh"
	SocketPath     = SocketDir + "/agent.sock"
	TokenDir       = "/var/run/secrets/certmesh"
	TokenFile      = "token"
	BundleDir      = "/etc/certmesh/bundle"
)

// Config says what to inject.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// ServerAddr is the CA server the agent talks to (host:port).
	ServerAddr string
	AgentImage string
	EnvoyImage string
	// TokenAudience of the projected token (default "spiffe://<trust domain>").
	TokenAudience string
	// TokenExpirationSeconds of the projected token (default 3600; the kubelet
	// refreshes it at 80%).
	TokenExpirationSeconds int64
	// BundleConfigMap holds the trust bundle under key wire.TrustBundleKey in
	// every namespace (default wire.TrustBundleConfigMap, published by the server).
	BundleConfigMap string
}

func (c Config) withDefaults() (Config, error) {
	if c.TrustDomain.IsZero() || c.ServerAddr == "" || c.AgentImage == "" || c.EnvoyImage == "" {
		return c, fmt.Errorf("inject: TrustDomain, ServerAddr, AgentImage and EnvoyImage are required")
	}
	if c.TokenAudience == "" {
		c.TokenAudience = c.TrustDomain.IDString()
	}
	if c.TokenExpirationSeconds <= 0 {
		c.TokenExpirationSeconds = 3600
	}
	if c.BundleConfigMap == "" {
		c.BundleConfigMap = wire.TrustBundleConfigMap
	}
	return c, nil
}

// Opted reports whether a pod gets the sidecars: its own label or annotation decides
// when set; otherwise its namespace's label.
func Opted(nsLabels, podLabels, podAnnotations map[string]string) bool {
	for _, v := range []string{podLabels[LabelInject], podAnnotations[LabelInject]} {
		switch v {
		case InjectDisabled:
			return false
		case InjectEnabled:
			return true
		}
	}
	return nsLabels[LabelInject] == InjectEnabled
}

// PatchOp is one RFC 6902 JSON patch operation.
type PatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// Patch returns the operations that add the sidecars to pod, or none when the pod
// already has them (the apiserver may call a webhook twice: reinvocation). Existing
// entries are never rewritten: new ones are inserted or appended by index, so fields
// this package's API version does not know survive. An error wrapping
// ErrBadAnnotation means the pod's annotations cannot be rendered.
func Patch(cfg Config, pod *corev1.Pod) ([]PatchOp, error) {
	if injected(pod) {
		return nil, nil
	}
	envoy, err := envoyContainer(cfg, pod)
	if err != nil {
		return nil, err
	}
	var ops []PatchOp
	// Native sidecars (init containers that keep running) start, in order, before the
	// app: the agent first so the socket exists, then Envoy.
	sidecars := []corev1.Container{agentContainer(cfg), envoy}
	if len(pod.Spec.InitContainers) == 0 {
		ops = append(ops, PatchOp{Op: "add", Path: "/spec/initContainers", Value: sidecars})
	} else {
		for i := len(sidecars) - 1; i >= 0; i-- {
			ops = append(ops, PatchOp{Op: "add", Path: "/spec/initContainers/0", Value: sidecars[i]})
		}
	}
	vols := volumes(cfg)
	if len(pod.Spec.Volumes) == 0 {
		ops = append(ops, PatchOp{Op: "add", Path: "/spec/volumes", Value: vols})
	} else {
		for _, v := range vols {
			ops = append(ops, PatchOp{Op: "add", Path: "/spec/volumes/-", Value: v})
		}
	}
	if pod.Annotations == nil {
		ops = append(ops, PatchOp{Op: "add", Path: "/metadata/annotations", Value: map[string]string{AnnotationInjected: "true"}})
	} else {
		ops = append(ops, PatchOp{Op: "add", Path: "/metadata/annotations/" + escape(AnnotationInjected), Value: "true"})
	}
	return ops, nil
}

func injected(pod *corev1.Pod) bool {
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			if c.Name == AgentContainer {
				return true
			}
		}
	}
	return false
}

// escape makes s one JSON pointer token (RFC 6901).
func escape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// MarshalPatch encodes ops; nil for no operations.
func MarshalPatch(ops []PatchOp) ([]byte, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	return json.Marshal(ops)
}
