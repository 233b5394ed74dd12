package inject

import (
	"context"
	"net/http"
	"slices"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// renderedBootstrap injects pod with cfg and reads the Envoy bootstrap back
// from the injected container's arguments, the way Envoy would load it.
func renderedBootstrap(t *testing.T, cfg Config, pod *corev1.Pod) (*bootstrapv3.Bootstrap, corev1.Container) {
	t.Helper()
	cfg, err := cfg.withDefaults()
	require.NoError(t, err)
	ops, err := Patch(cfg, pod)
	require.NoError(t, err)
	got := applyPatch(t, pod, ops)
	envoy := got.Spec.InitContainers[1]
	require.Equal(t, EnvoyContainer, envoy.Name)
	i := slices.Index(envoy.Args, "--config-yaml")
	require.GreaterOrEqual(t, i, 0, "bootstrap passed inline")
	b := new(bootstrapv3.Bootstrap)
	require.NoError(t, protojson.Unmarshal([]byte(envoy.Args[i+1]), b), "strict load, as Envoy does")
	require.NoError(t, ValidateBootstrap(b))
	for _, v := range got.Spec.Volumes {
		if v.ConfigMap != nil {
			require.Equal(t, BundleVolume, v.Name, "no ConfigMap but the trust bundle")
		}
	}
	return b, envoy
}

// peerSANs is what one listener's or cluster's TLS context accepts.
func peerSANs(t *testing.T, ctx *tlsv3.CommonTlsContext) []string {
	t.Helper()
	require.Equal(t, tlsv3.TlsParameters_TLSv1_2, ctx.GetTlsParams().GetTlsMinimumProtocolVersion())
	require.Equal(t, SecretSVID, ctx.GetTlsCertificateSdsSecretConfigs()[0].GetName())
	combined := ctx.GetCombinedValidationContext()
	require.Equal(t, SecretBundle, combined.GetValidationContextSdsSecretConfig().GetName())
	var out []string
	for _, m := range combined.GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
		require.Equal(t, tlsv3.SubjectAltNameMatcher_URI, m.GetSanType())
		if p := m.GetMatcher().GetPrefix(); p != "" {
			out = append(out, "prefix:"+p)
		} else {
			out = append(out, m.GetMatcher().GetExact())
		}
	}
	return out
}

type listenerSummary struct {
	addr  string
	port  uint32
	http  bool
	peers []string // nil: no TLS (loopback outbound)
}

func summarize(t *testing.T, l *listenerv3.Listener) listenerSummary {
	t.Helper()
	sa := l.GetAddress().GetSocketAddress()
	s := listenerSummary{addr: sa.GetAddress(), port: sa.GetPortValue()}
	fc := l.GetFilterChains()[0]
	s.http = fc.GetFilters()[0].GetTypedConfig().MessageIs(&hcmv3.HttpConnectionManager{})
	if ts := fc.GetTransportSocket(); ts != nil {
		var down tlsv3.DownstreamTlsContext
		require.NoError(t, ts.GetTypedConfig().UnmarshalTo(&down))
		require.True(t, down.GetRequireClientCertificate().GetValue(), "inbound requires a client certificate")
		s.peers = peerSANs(t, down.GetCommonTlsContext())
	}
	return s
}

func TestRenderedBootstrapPerPod(t *testing.T) {
	shopTD := spiffeid.RequireTrustDomainFromString("cluster.local")
	labTD := spiffeid.RequireTrustDomainFromString("lab.example")
	web := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Namespace: "shop", Annotations: map[string]string{
			AnnotationAllowedPeers: "spiffe://cluster.local/ns/ingress/sa/gateway, spiffe://cluster.local/ns/shop/sa/frontend",
			AnnotationUpstreams:    "backend:15001=backend.shop.svc.cluster.local:15006@spiffe://cluster.local/ns/shop/sa/backend",
		}},
		Spec: corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{
			{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
		}}}},
	}
	db := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "data", Annotations: map[string]string{
			AnnotationInboundPorts: "16000=sql",
			AnnotationAllowedPeers: "spiffe://lab.example/ns/shop/*",
			AnnotationUpstreams:    "cache:16379=10.0.0.7:6379@spiffe://lab.example/ns/data/sa/cache\nlogs:16514=[fd00::1]:6514@spiffe://lab.example/ns/ops/sa/logs",
		}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "pg", Ports: []corev1.ContainerPort{{Name: "sql", ContainerPort: 5432}}}}},
	}
	client := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "job", Namespace: "shop"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{ContainerPort: 7000}}}}},
	}
	for _, tc := range []struct {
		name          string
		td            spiffeid.TrustDomain
		pod           *corev1.Pod
		node          string
		listeners     map[string]listenerSummary
		upstreamPeers map[string]string // cluster → the one SPIFFE ID it accepts
		envoyPorts    []int32
	}{
		{
			name: "web: two declared ports, named peers, one upstream", td: shopTD, pod: web, node: "web-.shop",
			listeners: map[string]listenerSummary{
				"inbound_15006":    {addr: "0.0.0.0", port: 15006, http: true, peers: []string{"spiffe://cluster.local/ns/ingress/sa/gateway", "spiffe://cluster.local/ns/shop/sa/frontend"}},
				"inbound_15007":    {addr: "0.0.0.0", port: 15007, peers: []string{"spiffe://cluster.local/ns/ingress/sa/gateway", "spiffe://cluster.local/ns/shop/sa/frontend"}},
				"outbound_backend": {addr: "127.0.0.1", port: 15001},
			},
			upstreamPeers: map[string]string{"upstream_backend": "spiffe://cluster.local/ns/shop/sa/backend"},
			envoyPorts:    []int32{15006, 15007},
		},
		{
			name: "db: other trust domain, explicit port by name, path wildcard, IP upstreams", td: labTD, pod: db, node: "db-0.data",
			listeners: map[string]listenerSummary{
				"inbound_16000":  {addr: "0.0.0.0", port: 16000, peers: []string{"prefix:spiffe://lab.example/ns/shop/"}},
				"outbound_cache": {addr: "127.0.0.1", port: 16379},
				"outbound_logs":  {addr: "127.0.0.1", port: 16514},
			},
			upstreamPeers: map[string]string{"upstream_cache": "spiffe://lab.example/ns/data/sa/cache", "upstream_logs": "spiffe://lab.example/ns/ops/sa/logs"},
			envoyPorts:    []int32{16000},
		},
		{
			name: "defaults: the whole trust domain may call", td: shopTD, pod: client, node: "job.shop",
			listeners: map[string]listenerSummary{
				"inbound_15006": {addr: "0.0.0.0", port: 15006, peers: []string{"prefix:spiffe://cluster.local/"}},
			},
			envoyPorts: []int32{15006},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testCfg
			cfg.TrustDomain = tc.td
			b, envoy := renderedBootstrap(t, cfg, tc.pod)
			require.Equal(t, tc.node, b.GetNode().GetId())
			got := map[string]listenerSummary{}
			for _, l := range b.GetStaticResources().GetListeners() {
				got[l.GetName()] = summarize(t, l)
			}
			require.Equal(t, tc.listeners, got)
			upstreams := map[string]string{}
			for _, c := range b.GetStaticResources().GetClusters() {
				if ts := c.GetTransportSocket(); ts != nil {
					var up tlsv3.UpstreamTlsContext
					require.NoError(t, ts.GetTypedConfig().UnmarshalTo(&up))
					sans := peerSANs(t, up.GetCommonTlsContext())
					require.Len(t, sans, 1, "an upstream is one workload")
					upstreams[c.GetName()] = sans[0]
				}
			}
			if tc.upstreamPeers == nil {
				tc.upstreamPeers = map[string]string{}
			}
			require.Equal(t, tc.upstreamPeers, upstreams)
			var ports []int32
			for _, p := range envoy.Ports {
				ports = append(ports, p.ContainerPort)
			}
			require.Equal(t, tc.envoyPorts, ports)
			require.Contains(t, envoy.Args, "--log-level")
		})
	}
}

func TestBadAnnotationsRefused(t *testing.T) {
	td := testCfg.TrustDomain
	declared := []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	for _, tc := range []struct {
		name  string
		annot map[string]string
	}{
		{name: "upstream without ID", annot: map[string]string{AnnotationUpstreams: "b:15001=backend:80"}},
		{name: "upstream without local port", annot: map[string]string{AnnotationUpstreams: "b=backend:80@spiffe://example.org/b"}},
		{name: "upstream bad name", annot: map[string]string{AnnotationUpstreams: "B_1:15001=backend:80@spiffe://example.org/b"}},
		{name: "upstream other trust domain", annot: map[string]string{AnnotationUpstreams: "b:15001=backend:80@spiffe://evil.org/b"}},
		{name: "upstream whole trust domain", annot: map[string]string{AnnotationUpstreams: "b:15001=backend:80@spiffe://example.org"}},
		{name: "upstream bad host", annot: map[string]string{AnnotationUpstreams: "b:15001=back end:80@spiffe://example.org/b"}},
		{name: "upstream port 0", annot: map[string]string{AnnotationUpstreams: "b:15001=backend:0@spiffe://example.org/b"}},
		{name: "upstream name twice", annot: map[string]string{AnnotationUpstreams: "b:15001=x:1@spiffe://example.org/b,b:15002=x:1@spiffe://example.org/b"}},
		{name: "upstream on app port", annot: map[string]string{AnnotationUpstreams: "b:8080=x:1@spiffe://example.org/b"}},
		{name: "upstream on admin port", annot: map[string]string{AnnotationUpstreams: "b:15000=x:1@spiffe://example.org/b"}},
		{name: "upstream on inbound port", annot: map[string]string{AnnotationUpstreams: "b:15006=x:1@spiffe://example.org/b"}},
		{name: "peer not a SPIFFE ID", annot: map[string]string{AnnotationAllowedPeers: "https://example.org/x"}},
		{name: "peer other trust domain", annot: map[string]string{AnnotationAllowedPeers: "spiffe://evil.org/x"}},
		{name: "peer bad path", annot: map[string]string{AnnotationAllowedPeers: "spiffe://example.org/a//b"}},
		{name: "inbound unknown name", annot: map[string]string{AnnotationInboundPorts: "grpc"}},
		{name: "inbound bad listen port", annot: map[string]string{AnnotationInboundPorts: "70000=8080"}},
		{name: "inbound listen twice", annot: map[string]string{AnnotationInboundPorts: "15007=8080,9090"}},
		{name: "inbound too many", annot: map[string]string{AnnotationInboundPorts: "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n", Annotations: tc.annot},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Ports: declared}}},
			}
			_, err := ParseSidecar(td, pod)
			require.ErrorIs(t, err, ErrBadAnnotation)
			_, err = Patch(testCfg, pod)
			require.ErrorIs(t, err, ErrBadAnnotation)
		})
	}
}

func TestHandlerRefusesBadAnnotations(t *testing.T) {
	h, err := NewHandler(testCfg, func(context.Context, string) (map[string]string, error) {
		return map[string]string{LabelInject: InjectEnabled}, nil
	}, nil)
	require.NoError(t, err)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationUpstreams: "backend=backend:80"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
	}
	code, out := post(t, h, review(t, "mesh", pod))
	require.Equal(t, http.StatusOK, code)
	require.False(t, out.Response.Allowed)
	require.EqualValues(t, http.StatusBadRequest, out.Response.Result.Code)
	require.Contains(t, out.Response.Result.Message, AnnotationUpstreams, "the message names the annotation")
	require.Contains(t, out.Response.Result.Message, "NAME:LOCALPORT=HOST:PORT@SPIFFE-ID", "and the expected form")
}

func TestValidateBootstrapCatchesWhatValidateAllMisses(t *testing.T) {
	s, err := ParseSidecar(testCfg.TrustDomain, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n", Annotations: map[string]string{
			AnnotationUpstreams: "b:15001=x:1@spiffe://example.org/b"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
	})
	require.NoError(t, err)
	for _, tc := range []struct {
		name    string
		breakIt func(b *bootstrapv3.Bootstrap)
	}{
		{name: "empty stat_prefix inside an Any", breakIt: func(b *bootstrapv3.Bootstrap) {
			f := b.StaticResources.Listeners[0].FilterChains[0].Filters[0]
			var hcm hcmv3.HttpConnectionManager
			require.NoError(t, f.GetTypedConfig().UnmarshalTo(&hcm))
			hcm.StatPrefix = ""
			require.NoError(t, f.GetTypedConfig().MarshalFrom(&hcm))
		}},
		{name: "route to a missing cluster", breakIt: func(b *bootstrapv3.Bootstrap) {
			b.StaticResources.Clusters = slices.DeleteFunc(b.StaticResources.Clusters, func(c *clusterv3.Cluster) bool { return c.GetName() == InboundCluster(8080) })
		}},
		{name: "SDS cluster missing", breakIt: func(b *bootstrapv3.Bootstrap) {
			b.StaticResources.Clusters = slices.DeleteFunc(b.StaticResources.Clusters, func(c *clusterv3.Cluster) bool { return c.GetName() == AgentCluster })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := RenderBootstrap(s)
			require.NoError(t, err)
			require.NoError(t, b.ValidateAll())
			tc.breakIt(b)
			require.NoError(t, b.ValidateAll(), "ValidateAll alone misses it")
			require.Error(t, ValidateBootstrap(b))
		})
	}
}
