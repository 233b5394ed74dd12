package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// MaxReviewBytes bounds a request body: the apiserver's own request limit is
// 3 MiB, so a larger body does not come from it.
const MaxReviewBytes = 3 << 20

// NamespaceLabels returns the labels of a namespace (an informer lister in the server).
type NamespaceLabels func(ctx context.Context, namespace string) (map[string]string, error)

// Handler answers AdmissionReview v1 requests for pods.
type Handler struct {
	cfg        Config
	namespaces NamespaceLabels
	log        *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// ErrBadReview reports a request body that is not a usable AdmissionReview v1.
var ErrBadReview = errors.New("inject: bad AdmissionReview")

var tooLarge = fmt.Sprintf("AdmissionReview body over %d bytes (the apiserver's limit)", MaxReviewBytes)

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// NewHandler validates cfg.
func NewHandler(cfg Config, namespaces NamespaceLabels, log *slog.Logger) (*Handler, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if namespaces == nil {
		return nil, errors.New("inject: NamespaceLabels is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{cfg: cfg, namespaces: namespaces, log: log}, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > MaxReviewBytes {
		http.Error(w, tooLarge, http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxReviewBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		http.Error(w, tooLarge, http.StatusRequestEntityTooLarge)
		return
	}
	if err != nil {
		http.Error(w, "body unreadable", http.StatusBadRequest)
		return
	}
	review, err := DecodeReview(body)
	if err != nil {
		h.log.Warn("webhook: decode", "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	review.Response = h.admit(r.Context(), review.Request)
	review.Request = nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review)
}

// DecodeReview parses an AdmissionReview v1 carrying a request with a UID.
func DecodeReview(body []byte) (*admissionv1.AdmissionReview, error) {
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadReview, err)
	}
	gvk := schema.FromAPIVersionAndKind(review.APIVersion, review.Kind)
	if gvk != admissionv1.SchemeGroupVersion.WithKind("AdmissionReview") {
		return nil, fmt.Errorf("%w: got %s, want admission.k8s.io/v1 AdmissionReview", ErrBadReview, gvk)
	}
	if review.Request == nil || review.Request.UID == "" {
		return nil, fmt.Errorf("%w: no request or no uid", ErrBadReview)
	}
	return &review, nil
}

// admit decides for one request. Anything but a pod CREATE is allowed unchanged.
// Errors deny the pod (with failurePolicy Fail that is what a webhook outage would
// do too): an opted-in pod must not start without its sidecars.
func (h *Handler) admit(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Resource != podResource || req.SubResource != "" || req.Operation != admissionv1.Create {
		return resp
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(resp, http.StatusBadRequest, fmt.Sprintf("certmesh: pod does not decode: %v", err))
	}
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	nsLabels, err := h.namespaces(ctx, ns)
	if err != nil {
		h.log.Warn("webhook: namespace labels", "namespace", ns, "err", err)
		return deny(resp, http.StatusInternalServerError, "certmesh: cannot read the namespace's labels")
	}
	if !Opted(nsLabels, pod.Labels, pod.Annotations) {
		return resp
	}
	ops, err := Patch(h.cfg, &pod)
	if errors.Is(err, ErrBadAnnotation) {
		return deny(resp, http.StatusBadRequest, "certmesh: "+err.Error())
	}
	if err != nil {
		h.log.Error("webhook: render", "namespace", ns, "pod", pod.Name+pod.GenerateName, "err", err)
		return deny(resp, http.StatusInternalServerError, "certmesh: cannot render the sidecar's Envoy bootstrap")
	}
	patch, err := MarshalPatch(ops)
	if err != nil {
		return deny(resp, http.StatusInternalServerError, "certmesh: cannot encode the patch")
	}
	if patch != nil {
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
		h.log.Info("webhook: injected", "namespace", ns, "pod", pod.Name+pod.GenerateName)
	}
	return resp
}

func deny(resp *admissionv1.AdmissionResponse, code int32, msg string) *admissionv1.AdmissionResponse {
	resp.Allowed = false
	resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: code, Message: msg}
	return resp
}
