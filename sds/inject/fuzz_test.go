package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// FuzzAdmissionReview feeds arbitrary bodies to the handler: it must never panic, must
// answer 200 only with a review that echoes the request's UID, and must never patch a
// pod that did not opt in.
func FuzzAdmissionReview(f *testing.F) {
	pod, _ := json.Marshal(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelInject: InjectEnabled}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
	})
	seed, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "u", Namespace: "n", Operation: admissionv1.Create, Resource: podResource,
			Object: runtime.RawExtension{Raw: pod},
		},
	})
	f.Add(seed)
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","resource":{"version":"v1","resource":"pods"},"operation":"CREATE","object":null}}`))
	f.Add([]byte(`{}`))
	h, err := NewHandler(testCfg, func(context.Context, string) (map[string]string, error) { return nil, nil }, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body)))
		if rec.Code != http.StatusOK {
			return
		}
		in, err := DecodeReview(body)
		if err != nil {
			t.Fatalf("200 for a body DecodeReview refuses: %v", err)
		}
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("answer does not decode: %v", err)
		}
		if out.Response.UID != in.Request.UID {
			t.Fatalf("uid %q, want %q", out.Response.UID, in.Request.UID)
		}
		if len(out.Response.Patch) > 0 {
			var p corev1.Pod
			if json.Unmarshal(in.Request.Object.Raw, &p) != nil || !Opted(nil, p.Labels, p.Annotations) {
				t.Fatal("patched a pod that did not opt in")
			}
		}
	})
}
