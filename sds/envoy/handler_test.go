package envoy

import (
	"errors"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/identity"
)

func TestClassify(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString(testTD)
	ident := identity.Identity{ID: mustID(testID), EdgeCertificates: []string{"shop"}}
	tests := []struct {
		name    string
		res     string
		want    kind
		wantErr error
	}{
		{name: "default", res: "default", want: kindSVID},
		{name: "own ID", res: testID, want: kindSVID},
		{name: "ROOTCA", res: "ROOTCA", want: kindBundle},
		{name: "trust domain", res: "spiffe://example.org", want: kindBundle},
		{name: "granted edge", res: "shop", want: kindEdge},
		{name: "other ID", res: "spiffe://example.org/ns/shop/sa/db", wantErr: ErrForbiddenResource},
		{name: "ID in other domain", res: "spiffe://evil.org/x", wantErr: ErrForbiddenResource},
		{name: "other domain bundle", res: "spiffe://evil.org", wantErr: ErrUnknownResource},
		{name: "edge not granted", res: "admin", wantErr: ErrUnknownResource},
		{name: "case matters", res: "Default", wantErr: ErrUnknownResource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := classify(tt.res, ident, td)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestCheckRequest(t *testing.T) {
	tests := []struct {
		name    string
		req     *discoveryv3.DiscoveryRequest
		wantErr bool
	}{
		{name: "envoy-like", req: &discoveryv3.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: []string{"default"}, Node: &corev3.Node{Id: "n", Cluster: "c"}}},
		{name: "empty type_url", req: &discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}}},
		{name: "no names", req: &discoveryv3.DiscoveryRequest{}},
		{name: "max names", req: &discoveryv3.DiscoveryRequest{ResourceNames: strings.Split(strings.Repeat("a,", 2), ",")[:2]}},
		{name: "too many names", req: &discoveryv3.DiscoveryRequest{ResourceNames: []string{"a", "b", "c"}}, wantErr: true},
		{name: "wrong type_url", req: &discoveryv3.DiscoveryRequest{TypeUrl: "x"}, wantErr: true},
		{name: "empty name", req: &discoveryv3.DiscoveryRequest{ResourceNames: []string{""}}, wantErr: true},
		{name: "long name", req: &discoveryv3.DiscoveryRequest{ResourceNames: []string{strings.Repeat("a", maxNameLen+1)}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkRequest(tt.req, 2)
			if tt.wantErr {
				require.ErrorIs(t, err, ErrInvalidRequest)
				return
			}
			require.NoError(t, err)
		})
	}
}

func TestNormalize(t *testing.T) {
	require.Equal(t, []string{"ROOTCA", "default"}, normalize([]string{"default", "ROOTCA", "default"}))
	require.Empty(t, normalize(nil))
}

func TestNew(t *testing.T) {
	src := newFakeSource(spiffeid.RequireTrustDomainFromString(testTD))
	att := &fakeAttestor{}
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{name: "defaults", cfg: Config{Source: src, Attestor: att}},
		{name: "no source", cfg: Config{Attestor: att}, wantErr: true},
		{name: "no attestor", cfg: Config{Source: src}, wantErr: true},
		{name: "negative max", cfg: Config{Source: src, Attestor: att, MaxResourceNames: -1}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := New(tt.cfg)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, DefaultMaxResourceNames, h.maxNames)
			require.NotNil(t, h.log)
			require.NotNil(t, h.metrics)
		})
	}
}

func TestNewMetricsRegisters(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, err := NewMetrics(reg)
	require.NoError(t, err)
	_, err = NewMetrics(reg)
	var already prometheus.AlreadyRegisteredError
	require.True(t, errors.As(err, &already), "second registration: %v", err)
}

func TestEncodeCache(t *testing.T) {
	var c encodeCache
	builds := 0
	build := func(name string) func() (item, error) {
		return func() (item, error) { builds++; return item{name: name}, nil }
	}
	g1, g2 := make(chan struct{}), make(chan struct{})
	a, b := new(int), new(int)
	tests := []struct {
		name       string
		gen        chan struct{}
		key        cacheKey
		wantBuilds int
	}{
		{name: "first build", gen: g1, key: cacheKey{"default", kindSVID, a}, wantBuilds: 1},
		{name: "reused", gen: g1, key: cacheKey{"default", kindSVID, a}, wantBuilds: 1},
		{name: "other workload's SVID", gen: g1, key: cacheKey{"default", kindSVID, b}, wantBuilds: 2},
		{name: "other name", gen: g1, key: cacheKey{testID, kindSVID, a}, wantBuilds: 3},
		{name: "new generation rebuilds", gen: g2, key: cacheKey{"default", kindSVID, a}, wantBuilds: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			it, err := c.get(tt.gen, tt.key, build(tt.key.name))
			require.NoError(t, err)
			require.Equal(t, tt.key.name, it.name)
			require.Equal(t, tt.wantBuilds, builds)
		})
	}
}
