package identity

import (
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultKubernetesIDPath is the conventional SPIFFE ID path for a
// Kubernetes service account, as used by Istio and SPIRE.
const DefaultKubernetesIDPath = "/ns/{{.Namespace}}/sa/{{.ServiceAccount}}"

// IDTemplate renders SPIFFE IDs for Kubernetes service accounts. The path is
// a template so clusters can follow a different convention without code
// changes; every rendered ID is still validated.
type IDTemplate struct {
	td   spiffeid.TrustDomain
	tmpl *template.Template
}

// serviceAccountData is the template's data; its field names are the
// template's public contract.
type serviceAccountData struct {
	Namespace      string
	ServiceAccount string
}

// NewIDTemplate parses path. It renders it once with sample values so a
// broken template (unknown field, invalid ID) fails at startup.
func NewIDTemplate(td spiffeid.TrustDomain, path string) (*IDTemplate, error) {
	if td.IsZero() {
		return nil, errors.New("identity: id template: trust domain is required")
	}
	tmpl, err := template.New("spiffe-id-path").Option("missingkey=error").Parse(path)
	if err != nil {
		return nil, fmt.Errorf("identity: id template: %w", err)
	}
	t := &IDTemplate{td: td, tmpl: tmpl}
	if _, err := t.ForServiceAccount("default", "default"); err != nil {
		return nil, err
	}
	return t, nil
}

// ForServiceAccount renders the SPIFFE ID for a service account.
func (t *IDTemplate) ForServiceAccount(namespace, serviceAccount string) (spiffeid.ID, error) {
	if namespace == "" || serviceAccount == "" {
		return spiffeid.ID{}, errors.New("identity: id template: namespace and service account are required")
	}
	// Kubernetes names never contain '/'; refusing it keeps a crafted name
	// from adding path segments and impersonating another workload.
	if strings.Contains(namespace, "/") || strings.Contains(serviceAccount, "/") {
		return spiffeid.ID{}, fmt.Errorf("identity: id template: %q/%q contains '/'", namespace, serviceAccount)
	}
	var b strings.Builder
	data := serviceAccountData{Namespace: namespace, ServiceAccount: serviceAccount}
	if err := t.tmpl.Execute(&b, data); err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: id template: %w", err)
	}
	id, err := spiffeid.FromPath(t.td, b.String())
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: id template: rendered path %q: %w", b.String(), err)
	}
	if id.Path() == "" {
		return spiffeid.ID{}, errors.New("identity: id template: rendered an empty path")
	}
	return id, nil
}
