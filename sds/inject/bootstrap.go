package inject

import (
	"fmt"
	"net"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Names in the rendered bootstrap. The SDS resource names are the agent's:
// "default" is the workload's SVID, "ROOTCA" the trust bundle.
const (
	AgentCluster = "certmesh_agent"
	SecretSVID   = "default"
	SecretBundle = "ROOTCA"
)

// maxBootstrapBytes keeps the --config-yaml argument under Linux's 128 KiB
// limit on one argument string (MAX_ARG_STRLEN) with room to spare.
const maxBootstrapBytes = 64 << 10

// InboundListener, InboundCluster, OutboundListener and UpstreamCluster name
// the rendered resources.
func InboundListener(listenPort uint32) string { return "inbound_" + itoa(listenPort) }
func InboundCluster(appPort uint32) string     { return "local_" + itoa(appPort) }
func OutboundListener(name string) string      { return "outbound_" + name }
func UpstreamCluster(name string) string       { return "upstream_" + name }

func itoa(p uint32) string { return strconv.FormatUint(uint64(p), 10) }

// RenderBootstrap builds the pod's Envoy bootstrap: an mTLS listener per
// inbound port that admits only s.AllowedPeers, a loopback listener per
// upstream that originates mTLS and checks the upstream's SPIFFE ID, and the
// agent's unix socket as the only source of certificates (SDS). The result
// is validated like Envoy validates it (ValidateBootstrap).
func RenderBootstrap(s Sidecar) (*bootstrapv3.Bootstrap, error) {
	b := &bootstrapv3.Bootstrap{
		Node:            &corev3.Node{Id: s.Node, Cluster: s.Cluster},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{},
		Admin:           &bootstrapv3.Admin{Address: socketAddress("127.0.0.1", AdminPort)},
	}
	sr := b.StaticResources
	peers := sanMatchers(s.AllowedPeers)
	for _, in := range s.Inbound {
		l, err := inboundListener(in, peers)
		if err != nil {
			return nil, err
		}
		sr.Listeners = append(sr.Listeners, l)
		if !hasCluster(sr.Clusters, InboundCluster(in.AppPort)) {
			sr.Clusters = append(sr.Clusters, staticCluster(InboundCluster(in.AppPort), socketAddress("127.0.0.1", in.AppPort)))
		}
	}
	for _, u := range s.Upstreams {
		l, err := outboundListener(u)
		if err != nil {
			return nil, err
		}
		c, err := upstreamCluster(u)
		if err != nil {
			return nil, err
		}
		sr.Listeners, sr.Clusters = append(sr.Listeners, l), append(sr.Clusters, c)
	}
	agent, err := agentCluster()
	if err != nil {
		return nil, err
	}
	sr.Clusters = append(sr.Clusters, agent)
	if err := ValidateBootstrap(b); err != nil {
		return nil, fmt.Errorf("inject: rendered bootstrap: %w", err)
	}
	return b, nil
}

// MarshalBootstrap encodes b as compact JSON (which Envoy's --config-yaml
// accepts: YAML is a superset of JSON).
func MarshalBootstrap(b *bootstrapv3.Bootstrap) ([]byte, error) {
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("inject: encode bootstrap: %w", err)
	}
	if len(js) > maxBootstrapBytes {
		return nil, fmt.Errorf("%w: the rendered bootstrap is %d bytes, over %d: fewer upstreams or peers", ErrBadAnnotation, len(js), maxBootstrapBytes)
	}
	return js, nil
}

func hasCluster(cs []*clusterv3.Cluster, name string) bool {
	for _, c := range cs {
		if c.GetName() == name {
			return true
		}
	}
	return false
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func sdsConfig(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{
		ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType: corev3.ApiConfigSource_GRPC, TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: AgentCluster},
			}}},
		}},
	}}
}

func sanMatchers(peers []PeerMatch) []*tlsv3.SubjectAltNameMatcher {
	out := make([]*tlsv3.SubjectAltNameMatcher, 0, len(peers))
	for _, p := range peers {
		m := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p.Exact}}
		if p.Prefix != "" {
			m.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: p.Prefix}
		}
		out = append(out, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: m})
	}
	return out
}

// commonTLS: the SVID and the bundle over SDS, TLS ≥ 1.2, and the peer's URI
// SAN checked against peers.
func commonTLS(peers []*tlsv3.SubjectAltNameMatcher, alpn []string) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
		AlpnProtocols:                  alpn,
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsConfig(SecretSVID)},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: peers},
				ValidationContextSdsSecretConfig: sdsConfig(SecretBundle),
			},
		},
	}
}

func transportSocket(m proto.Message) (*corev3.TransportSocket, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, fmt.Errorf("inject: pack %T: %w", m, err)
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

func networkFilter(name string, m proto.Message) (*listenerv3.Filter, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, fmt.Errorf("inject: pack %T: %w", m, err)
	}
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

func tcpProxy(statPrefix, cluster string) (*listenerv3.Filter, error) {
	return networkFilter("envoy.filters.network.tcp_proxy", &tcpproxyv3.TcpProxy{
		StatPrefix: statPrefix, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
	})
}

// inboundHTTP parses HTTP so the app learns the verified caller from
// x-forwarded-client-cert (any value the caller sent is dropped).
func inboundHTTP(statPrefix, cluster string) (*listenerv3.Filter, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	return networkFilter("envoy.filters.network.http_connection_manager", &hcmv3.HttpConnectionManager{
		StatPrefix:                  statPrefix,
		CodecType:                   hcmv3.HttpConnectionManager_AUTO,
		ForwardClientCertDetails:    hcmv3.HttpConnectionManager_SANITIZE_SET,
		SetCurrentClientCertDetails: &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true},
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: statPrefix,
			VirtualHosts: []*routev3.VirtualHost{{Name: "app", Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
			}}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
}

func inboundListener(in Inbound, peers []*tlsv3.SubjectAltNameMatcher) (*listenerv3.Listener, error) {
	name, cluster := InboundListener(in.ListenPort), InboundCluster(in.AppPort)
	filter, err := tcpProxy(name, cluster)
	alpn := []string(nil)
	if in.HTTP {
		filter, err = inboundHTTP(name, cluster)
		alpn = []string{"h2", "http/1.1"}
	}
	if err != nil {
		return nil, err
	}
	ts, err := transportSocket(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext:         commonTLS(peers, alpn),
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:         name,
		Address:      socketAddress("0.0.0.0", in.ListenPort),
		FilterChains: []*listenerv3.FilterChain{{TransportSocket: ts, Filters: []*listenerv3.Filter{filter}}},
	}, nil
}

func outboundListener(u Upstream) (*listenerv3.Listener, error) {
	name := OutboundListener(u.Name)
	filter, err := tcpProxy(name, UpstreamCluster(u.Name))
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:         name,
		Address:      socketAddress("127.0.0.1", u.LocalPort),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{filter}}},
	}, nil
}

func staticCluster(name string, addr *corev3.Address) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}}}},
		}}},
	}
}

func upstreamCluster(u Upstream) (*clusterv3.Cluster, error) {
	c := staticCluster(UpstreamCluster(u.Name), socketAddress(u.Host, u.Port))
	c.ConnectTimeout = durationpb.New(2 * time.Second)
	if net.ParseIP(u.Host) == nil {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	}
	peer := sanMatchers([]PeerMatch{{Exact: u.ID.String()}})
	ts, err := transportSocket(&tlsv3.UpstreamTlsContext{CommonTlsContext: commonTLS(peer, nil)})
	if err != nil {
		return nil, err
	}
	c.TransportSocket = ts
	return c, nil
}

// agentCluster is the certmesh agent: SDS over gRPC (HTTP/2) on its socket.
func agentCluster() (*clusterv3.Cluster, error) {
	c := staticCluster(AgentCluster, &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: SocketPath}}})
	opts, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
	if err != nil {
		return nil, err
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}
	return c, nil
}
