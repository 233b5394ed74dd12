package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestServingDNSNames(t *testing.T) {
	svc := serviceDNSNames("mesh", "cluster.local")
	require.Equal(t, []string{"certmesh.mesh.svc", "certmesh.mesh.svc.cluster.local"}, svc)
	cases := []struct {
		name  string
		flags serverFlags
		kube  []string // nil: not Kubernetes mode
		want  []string
	}{
		{name: "nothing set", want: nil},
		{name: "flag", flags: serverFlags{dnsNames: "ca.example.org, ca2.example.org"}, want: []string{"ca.example.org", "ca2.example.org"}},
		{name: "kubernetes default", kube: svc, want: svc},
		{name: "flag replaces the kubernetes default", flags: serverFlags{dnsNames: "ca.example.org"}, kube: svc, want: []string{"ca.example.org"}},
		{name: "istio in kubernetes", flags: serverFlags{istioCompat: true}, kube: svc, want: append(svc, "istiod.istio-system.svc")},
		{name: "istio in dev", flags: serverFlags{istioCompat: true}, want: []string{"istiod.istio-system.svc"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.flags.servingDNSNames(tc.kube))
		})
	}
}
