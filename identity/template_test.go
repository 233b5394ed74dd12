package identity

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

func TestNewIDTemplate(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	tests := []struct {
		name    string
		td      spiffeid.TrustDomain
		path    string
		wantErr bool
	}{
		{name: "default", td: td, path: DefaultKubernetesIDPath},
		{name: "custom", td: td, path: "/k8s/{{.Namespace}}/{{.ServiceAccount}}"},
		{name: "zero trust domain", path: DefaultKubernetesIDPath, wantErr: true},
		{name: "syntax error", td: td, path: "/ns/{{.Namespace", wantErr: true},
		{name: "unknown field", td: td, path: "/ns/{{.Pod}}", wantErr: true},
		{name: "no leading slash", td: td, path: "ns/{{.Namespace}}", wantErr: true},
		{name: "empty path", td: td, path: "", wantErr: true},
		{name: "trailing slash", td: td, path: "/ns/{{.Namespace}}/", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewIDTemplate(tt.td, tt.path)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
		})
	}
}

func TestIDTemplateForServiceAccount(t *testing.T) {
	tmpl, err := NewIDTemplate(spiffeid.RequireTrustDomainFromString("example.org"), DefaultKubernetesIDPath)
	require.NoError(t, err)
	tests := []struct {
		name       string
		namespace  string
		sa         string
		want       string
		wantErrors bool
	}{
		{name: "plain", namespace: "default", sa: "web", want: "spiffe://example.org/ns/default/sa/web"},
		{name: "dots and dashes", namespace: "kube-system", sa: "a.b-c", want: "spiffe://example.org/ns/kube-system/sa/a.b-c"},
		{name: "empty namespace", namespace: "", sa: "web", wantErrors: true},
		{name: "empty service account", namespace: "default", sa: "", wantErrors: true},
		{name: "slash injection", namespace: "default", sa: "x/sa/admin", wantErrors: true},
		{name: "dot segment", namespace: "..", sa: "web", wantErrors: true},
		{name: "invalid character", namespace: "default", sa: "we b", wantErrors: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tmpl.ForServiceAccount(tt.namespace, tt.sa)
			if tt.wantErrors {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got.String())
		})
	}
}
