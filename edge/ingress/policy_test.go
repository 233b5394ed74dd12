package ingress

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmesh/certmesh/edge"
)

func TestIssuerName(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ann    map[string]string
		want   string
		wantOK bool
	}{
		{name: "none", ann: nil},
		{name: "certmesh", ann: map[string]string{AnnotationIssuer: "le"}, want: "le", wantOK: true},
		{name: "cert-manager cluster issuer", ann: map[string]string{AnnotationCertManagerCluster: "prod"}, want: "prod", wantOK: true},
		{name: "cert-manager issuer", ann: map[string]string{AnnotationCertManagerIssuer: "ns-iss"}, want: "ns-iss", wantOK: true},
		{name: "certmesh wins", ann: map[string]string{AnnotationIssuer: "a", AnnotationCertManagerCluster: "b"}, want: "a", wantOK: true},
		{name: "blank ignored", ann: map[string]string{AnnotationIssuer: " ", AnnotationCertManagerIssuer: "c"}, want: "c", wantOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := IssuerName(tc.ann)
			require.Equal(t, tc.wantOK, ok)
			require.Equal(t, tc.want, got)
		})
	}
}

func tlsIngress(entries ...networkingv1.IngressTLS) *networkingv1.Ingress {
	return &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec:       networkingv1.IngressSpec{TLS: entries},
	}
}

func TestDesiredCertificates(t *testing.T) {
	http := Issuer{Solver: edge.SolverConfig{Type: edge.HTTP01}}
	dns := Issuer{Solver: edge.SolverConfig{Type: edge.DNS01, DNS: edge.DNSSolverConfig{Provider: "x"}}}
	for _, tc := range []struct {
		name         string
		ing          *networkingv1.Ingress
		iss          Issuer
		wantNames    map[string][]string
		wantProblems int
	}{
		{
			name: "one entry, hosts normalised",
			ing:  tlsIngress(networkingv1.IngressTLS{SecretName: "web-tls", Hosts: []string{"A.example.com.", "a.example.com", "b.example.com"}}),
			iss:  http, wantNames: map[string][]string{"shop/web-tls": {"a.example.com", "b.example.com"}},
		},
		{
			name: "two entries one secret merge",
			ing: tlsIngress(
				networkingv1.IngressTLS{SecretName: "s", Hosts: []string{"a.example"}},
				networkingv1.IngressTLS{SecretName: "s", Hosts: []string{"b.example"}}),
			iss: http, wantNames: map[string][]string{"shop/s": {"a.example", "b.example"}},
		},
		{
			name: "missing secret and hosts reported",
			ing: tlsIngress(
				networkingv1.IngressTLS{Hosts: []string{"a.example"}},
				networkingv1.IngressTLS{SecretName: "s"}),
			iss: http, wantNames: map[string][]string{}, wantProblems: 2,
		},
		{
			name: "wildcard needs dns-01",
			ing:  tlsIngress(networkingv1.IngressTLS{SecretName: "w", Hosts: []string{"*.example"}}),
			iss:  http, wantNames: map[string][]string{}, wantProblems: 1,
		},
		{
			name: "wildcard with dns-01",
			ing:  tlsIngress(networkingv1.IngressTLS{SecretName: "w", Hosts: []string{"*.example", "example"}}),
			iss:  dns, wantNames: map[string][]string{"shop/w": {"*.example", "example"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := DesiredCertificates(tc.ing, "le", tc.iss)
			names := map[string][]string{}
			problems := 0
			for _, d := range got {
				if d.Problem != "" {
					problems++
					continue
				}
				require.Equal(t, "le", d.Spec.Issuer)
				require.Equal(t, tc.iss.Solver.Type, d.Spec.Solver.Type)
				names[d.Spec.Name] = d.Spec.DNSNames
			}
			require.Equal(t, tc.wantNames, names)
			require.Equal(t, tc.wantProblems, problems)
		})
	}
}

func TestParseIssuers(t *testing.T) {
	secrets := func(_ context.Context, name string) (map[string][]byte, error) {
		switch name {
		case "dns-creds":
			return map[string][]byte{"CLOUDFLARE_DNS_API_TOKEN": []byte("tok")}, nil
		case "eab":
			return map[string][]byte{"hmac": []byte("bWFj\n")}, nil
		}
		return nil, errors.New("not found")
	}
	for _, tc := range []struct {
		name    string
		yaml    string
		wantErr bool
		check   func(t *testing.T, got map[string]Issuer)
	}{
		{name: "empty", yaml: "", check: func(t *testing.T, got map[string]Issuer) { require.Empty(t, got) }},
		{
			name: "preset http-01 default", yaml: "le:\n  preset: staging\n  email: a@b.c\n",
			check: func(t *testing.T, got map[string]Issuer) {
				require.Equal(t, edge.LetsEncryptStaging, got["le"].ACME.DirectoryURL)
				require.Equal(t, edge.HTTP01, got["le"].Solver.Type)
			},
		},
		{
			name: "dns-01 credentials and eab from secrets",
			yaml: "z:\n  directory: https://acme.example/dir\n  eab: {kid: k, hmacSecretRef: {name: eab, key: hmac}}\n" +
				"  solver: {type: dns-01, provider: cloudflare, credentialsSecretRef: {name: dns-creds}, resolvers: ['1.1.1.1:53']}\n",
			check: func(t *testing.T, got map[string]Issuer) {
				z := got["z"]
				require.Equal(t, &edge.EAB{KID: "k", HMAC: "bWFj"}, z.ACME.EAB)
				require.Equal(t, "cloudflare", z.Solver.DNS.Provider)
				require.Equal(t, map[string]string{"CLOUDFLARE_DNS_API_TOKEN": "tok"}, z.Solver.DNS.Credentials)
				require.Equal(t, []string{"1.1.1.1:53"}, z.Solver.DNS.Resolvers)
			},
		},
		{name: "unknown field", yaml: "le:\n  preset: staging\n  emial: x\n", wantErr: true},
		{name: "no directory", yaml: "le:\n  email: x\n", wantErr: true},
		{name: "preset and directory", yaml: "le:\n  preset: staging\n  directory: https://x\n", wantErr: true},
		{name: "missing credentials secret", yaml: "le:\n  preset: staging\n  solver: {type: dns-01, provider: p, credentialsSecretRef: {name: nope}}\n", wantErr: true},
		{name: "provider on http-01", yaml: "le:\n  preset: staging\n  solver: {provider: p}\n", wantErr: true},
		{name: "unknown solver", yaml: "le:\n  preset: staging\n  solver: {type: tls-alpn-02}\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseIssuers(context.Background(), []byte(tc.yaml), secrets)
			if tc.wantErr {
				require.ErrorIs(t, err, ErrInvalidIssuers)
				return
			}
			require.NoError(t, err)
			tc.check(t, got)
		})
	}
}
