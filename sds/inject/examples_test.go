package inject

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestShippedExamplesRender injects every Deployment of the shipped examples
// with the shipped server's trust domain: their annotations must parse, name
// IDs of that trust domain, and render a valid bootstrap.
func TestShippedExamplesRender(t *testing.T) {
	dep, err := os.ReadFile("../../deploy/kubernetes/deployment.yaml")
	require.NoError(t, err)
	m := regexp.MustCompile(`--trust-domain=(\S+)`).FindSubmatch(dep)
	require.NotNil(t, m, "deployment.yaml sets --trust-domain")
	cfg := testCfg
	cfg.TrustDomain = spiffeid.RequireTrustDomainFromString(string(m[1]))

	raw, err := os.ReadFile("../../deploy/kubernetes/examples/shop.yaml")
	require.NoError(t, err)
	meshed := 0
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var d appsv1.Deployment
		require.NoError(t, yaml.Unmarshal([]byte(doc), &d))
		if d.Kind != "Deployment" {
			continue
		}
		t.Run(d.Name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: d.Spec.Template.ObjectMeta, Spec: d.Spec.Template.Spec}
			pod.Namespace = d.Namespace
			b, _ := renderedBootstrap(t, cfg, pod)
			require.NotEmpty(t, b.GetStaticResources().GetListeners())
			if _, ok := pod.Annotations[AnnotationAllowedPeers]; ok {
				meshed++
			}
		})
	}
	require.Positive(t, meshed, "the examples show certmesh.io/allowed-peers")
}
