package kube_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// deployDir is deploy/kubernetes relative to this package.
var deployDir = filepath.Join("..", "..", "deploy", "kubernetes")

// kustomization lists the resources of one kustomization.yaml, and checks that no
// YAML file of the folder is left out of it (a manifest nobody applies rots).
func kustomization(t testing.TB, dir string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	require.NoError(t, err)
	var k struct {
		Resources []string `yaml:"resources"`
	}
	require.NoError(t, yaml.Unmarshal(data, &k))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".yaml") && e.Name() != "kustomization.yaml" {
			require.Contains(t, k.Resources, e.Name(), "%s/%s is not listed in kustomization.yaml", dir, e.Name())
		}
	}
	return k.Resources
}

// objects decodes every document of a manifest file.
func objects(t testing.TB, path string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for range 1000 {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err, path)
		if len(obj) > 0 {
			out = append(out, &unstructured.Unstructured{Object: obj})
		}
	}
	t.Fatalf("%s: too many documents", path)
	return nil
}

// applier server-side applies unstructured objects, mapping kinds to resources
// through the apiserver's discovery.
type applier struct {
	client dynamic.Interface
	mapper meta.RESTMapper
}

func newApplier(t testing.TB, cfg *rest.Config) *applier {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	return &applier{client: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

func (a *applier) resource(obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return a.client.Resource(m.Resource).Namespace(obj.GetNamespace()), nil
	}
	return a.client.Resource(m.Resource), nil
}

// apply server-side applies obj; a schema error in a manifest fails here.
func (a *applier) apply(ctx context.Context, obj *unstructured.Unstructured) error {
	ri, err := a.resource(obj)
	if err != nil {
		return err
	}
	_, err = ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: "certmesh-deploy-test", Force: true})
	return err
}

func (a *applier) delete(ctx context.Context, obj *unstructured.Unstructured) error {
	ri, err := a.resource(obj)
	if err != nil {
		return err
	}
	if err := ri.Delete(ctx, obj.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// TestDeployManifestsApply applies the kustomize base and the examples (the Gateway
// API one after installing its CRDs) to the real apiserver with server-side apply (strict field validation), so any schema error —
// a misspelt field, a wrong type, an invalid selector — fails the build.
func TestDeployManifestsApply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := rest.CopyConfig(cluster.Config)
	a := newApplier(t, cfg)
	var applied []*unstructured.Unstructured
	t.Cleanup(func() {
		// Cluster-scoped objects would outlive this test and change the others'
		// behaviour (the webhook configuration fails pod creation in opted-in
		// namespaces while no certmesh answers): remove them all.
		for _, obj := range slices.Backward(applied) {
			if obj.GetNamespace() == "" {
				require.NoError(t, a.delete(context.Background(), obj))
			}
		}
	})
	for _, dir := range []string{deployDir, filepath.Join(deployDir, "examples"), filepath.Join(deployDir, "examples", "istio-compat")} {
		for _, file := range kustomization(t, dir) {
			for _, obj := range objects(t, filepath.Join(dir, file)) {
				require.NoError(t, a.apply(ctx, obj), "%s: %s %s", file, obj.GetKind(), obj.GetName())
				applied = append(applied, obj)
			}
		}
	}
	// The Gateway API example needs its CRDs (removed again when the test ends).
	installGatewayAPI(t)
	dir := filepath.Join(deployDir, "examples", "gateway-api")
	for _, file := range kustomization(t, dir) {
		for _, obj := range objects(t, filepath.Join(dir, file)) {
			var err error
			require.Eventually(t, func() bool { // until the CRDs are established and discovered
				err = newApplier(t, cfg).apply(ctx, obj)
				return err == nil
			}, 30*time.Second, 200*time.Millisecond, "%s: %s %s: %v", file, obj.GetKind(), obj.GetName(), err)
			applied = append(applied, obj)
		}
	}
	kinds := map[string]int{}
	for _, obj := range applied {
		kinds[obj.GetKind()]++
	}
	for _, kind := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
		"ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "MutatingWebhookConfiguration", "Ingress", "Gateway", "ListenerSet", "HTTPRoute"} {
		require.Positive(t, kinds[kind], "no %s in deploy/kubernetes", kind)
	}
	dep, err := cluster.Client.AppsV1().Deployments("certmesh").Get(ctx, "certmesh-server", metav1.GetOptions{})
	require.NoError(t, err)
	require.EqualValues(t, 2, *dep.Spec.Replicas)
	require.NotNil(t, dep.Spec.Template.Spec.Affinity.PodAntiAffinity)
	c := dep.Spec.Template.Spec.Containers[0]
	require.NotNil(t, c.ReadinessProbe)
	require.NotNil(t, c.LivenessProbe)
}
