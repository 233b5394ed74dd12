package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

var testCfg = Config{
	TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
	ServerAddr:  "certmesh.certmesh.svc:8443",
	AgentImage:  "ghcr.io/certmesh/certmesh:test",
	EnvoyImage:  "envoyproxy/envoy:v1.36.2",
}

func TestOpted(t *testing.T) {
	on := map[string]string{LabelInject: InjectEnabled}
	off := map[string]string{LabelInject: InjectDisabled}
	for _, tc := range []struct {
		name              string
		ns, labels, annot map[string]string
		want              bool
	}{
		{name: "nothing", want: false},
		{name: "namespace", ns: on, want: true},
		{name: "pod label", labels: on, want: true},
		{name: "pod annotation", annot: on, want: true},
		{name: "pod opts out of namespace", ns: on, labels: off, want: false},
		{name: "annotation opts out", ns: on, annot: off, want: false},
		{name: "other value ignored", ns: map[string]string{LabelInject: "yes"}, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, Opted(tc.ns, tc.labels, tc.annot))
		})
	}
}

// applyPatch applies ops to pod the way the apiserver does.
func applyPatch(t *testing.T, pod *corev1.Pod, ops []PatchOp) *corev1.Pod {
	t.Helper()
	raw, err := json.Marshal(pod)
	require.NoError(t, err)
	patchJSON, err := MarshalPatch(ops)
	require.NoError(t, err)
	p, err := jsonpatch.DecodePatch(patchJSON)
	require.NoError(t, err)
	out, err := p.Apply(raw)
	require.NoError(t, err)
	var got corev1.Pod
	require.NoError(t, json.Unmarshal(out, &got))
	return &got
}

func TestPatch(t *testing.T) {
	cfg, err := testCfg.withDefaults()
	require.NoError(t, err)
	bare := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	full := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"a": "b"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "migrate"}},
			Containers:     []corev1.Container{{Name: "app"}},
			Volumes:        []corev1.Volume{{Name: "data"}},
		},
	}
	for _, tc := range []struct {
		name      string
		pod       *corev1.Pod
		wantInit  []string
		wantVols  int
		wantAnnot int
	}{
		{name: "bare pod", pod: bare, wantInit: []string{AgentContainer, EnvoyContainer}, wantVols: 3, wantAnnot: 1},
		{name: "existing init, volumes, annotations", pod: full, wantInit: []string{AgentContainer, EnvoyContainer, "migrate"}, wantVols: 4, wantAnnot: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ops, err := Patch(cfg, tc.pod)
			require.NoError(t, err)
			got := applyPatch(t, tc.pod, ops)
			var names []string
			for _, c := range got.Spec.InitContainers {
				names = append(names, c.Name)
			}
			require.Equal(t, tc.wantInit, names)
			require.Len(t, got.Spec.Volumes, tc.wantVols)
			require.Len(t, got.Annotations, tc.wantAnnot)
			require.Equal(t, "true", got.Annotations[AnnotationInjected])
			agent := got.Spec.InitContainers[0]
			require.Equal(t, corev1.ContainerRestartPolicyAlways, *agent.RestartPolicy)
			require.Contains(t, agent.Args, "--token-file")
			require.Contains(t, agent.Args, "example.org")
			var token *corev1.ServiceAccountTokenProjection
			for _, v := range got.Spec.Volumes {
				if v.Name == TokenVolume {
					token = v.Projected.Sources[0].ServiceAccountToken
				}
			}
			require.Equal(t, "spiffe://example.org", token.Audience)
			again, err := Patch(cfg, got)
			require.NoError(t, err)
			require.Nil(t, again, "a second call (reinvocation) adds nothing")
		})
	}
}

func review(t *testing.T, ns string, pod *corev1.Pod) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	require.NoError(t, err)
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "u-1", Namespace: ns, Operation: admissionv1.Create,
			Resource: podResource, Object: runtime.RawExtension{Raw: raw},
		},
	})
	require.NoError(t, err)
	return body
}

func post(t *testing.T, h http.Handler, body []byte) (int, *admissionv1.AdmissionReview) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		return rec.Code, nil
	}
	var out admissionv1.AdmissionReview
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out))
	return rec.Code, &out
}

func TestHandler(t *testing.T) {
	nsLabels := func(_ context.Context, ns string) (map[string]string, error) {
		switch ns {
		case "mesh":
			return map[string]string{LabelInject: InjectEnabled}, nil
		case "broken":
			return nil, errors.New("boom")
		}
		return nil, nil
	}
	h, err := NewHandler(testCfg, nsLabels, nil)
	require.NoError(t, err)
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}

	code, out := post(t, h, review(t, "mesh", pod))
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "admission.k8s.io/v1", out.APIVersion)
	require.Equal(t, "AdmissionReview", out.Kind)
	require.EqualValues(t, "u-1", out.Response.UID)
	require.True(t, out.Response.Allowed)
	require.Equal(t, admissionv1.PatchTypeJSONPatch, *out.Response.PatchType)
	require.NotEmpty(t, out.Response.Patch)

	_, out = post(t, h, review(t, "plain", pod))
	require.True(t, out.Response.Allowed)
	require.Empty(t, out.Response.Patch, "a pod that does not opt in is untouched")
	require.Nil(t, out.Response.PatchType)

	_, out = post(t, h, review(t, "broken", pod))
	require.False(t, out.Response.Allowed, "no namespace labels: refuse rather than guess")

	for _, bad := range [][]byte{nil, []byte("{"), []byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}`), []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`)} {
		code, _ := post(t, h, bad)
		require.Equal(t, http.StatusBadRequest, code, string(bad))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, Path, nil))
	require.Equal(t, http.StatusMethodNotAllowed, rec.Code)
}

func TestNewHandlerValidates(t *testing.T) {
	_, err := NewHandler(Config{}, func(context.Context, string) (map[string]string, error) { return nil, nil }, nil)
	require.Error(t, err)
	_, err = NewHandler(testCfg, nil, nil)
	require.Error(t, err)
}
