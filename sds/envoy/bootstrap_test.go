package envoy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/certmesh/certmesh/sds/inject"

	// Every typed_config type the bootstraps use must be linked in, or
	// protojson cannot resolve the Any.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// deployDir holds the bootstraps; this test lives beside the SDS server
// they talk to so that a change to either is checked against the other.
const deployDir = "../../deploy/envoy"

// TestBootstraps loads each bootstrap the way Envoy would (strict JSON
// mapping into bootstrap.v3.Bootstrap), validates it including every
// message packed in an Any, and checks the parts Envoy validates only at
// runtime: cluster references and the TLS policy.
func TestBootstraps(t *testing.T) {
	tests := []struct {
		name          string
		file          string
		requireClient bool
		secrets       []string
	}{
		{name: "sidecar", file: "sidecar.yaml", requireClient: true, secrets: []string{"default", "ROOTCA"}},
		{name: "gateway", file: "gateway.yaml", secrets: []string{"shop", "default", "ROOTCA"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(deployDir, tt.file))
			require.NoError(t, err)
			b, err := loadBootstrap(raw)
			require.NoError(t, err)
			c, err := checkBootstrap(b)
			require.NoError(t, err)
			require.ElementsMatch(t, tt.secrets, slices.Compact(slices.Sorted(slices.Values(c.secrets))))
			require.Equal(t, tt.requireClient, c.requireClient)
		})
	}
}

// TestBootstrapsBroken proves the checks can fail: each edit breaks the
// sidecar bootstrap in a way a plain ValidateAll would miss or that
// protojson must refuse.
func TestBootstrapsBroken(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(deployDir, "sidecar.yaml"))
	require.NoError(t, err)
	tests := []struct {
		name, old, new string
	}{
		{name: "empty stat_prefix inside an Any", old: "stat_prefix: inbound", new: `stat_prefix: ""`},
		{name: "unknown field", old: "require_client_certificate: true", new: "require_client_certificates: true"},
		{name: "unknown enum value", old: "san_type: URI", new: "san_type: URL"},
		{name: "empty SDS cluster", old: "envoy_grpc: {cluster_name: certmesh_agent}", new: `envoy_grpc: {cluster_name: ""}`},
		{name: "route to missing cluster", old: "route: {cluster: local_app}", new: "route: {cluster: local_ap}"},
		{name: "SDS to missing cluster", old: "envoy_grpc: {cluster_name: certmesh_agent}", new: "envoy_grpc: {cluster_name: agent}"},
		{name: "TLS 1.0 allowed", old: "tls_minimum_protocol_version: TLSv1_2", new: "tls_minimum_protocol_version: TLSv1_0"},
		{name: "no TLS floor", old: "tls_params: {tls_minimum_protocol_version: TLSv1_2}", new: "tls_params: {}"},
		{name: "peer not checked by SPIFFE ID", old: "san_type: URI", new: "san_type: DNS"},
		{name: "no SAN match", old: "match_typed_subject_alt_names:\n              - san_type: URI\n                matcher: {exact: spiffe://example.org/ns/shop/sa/backend}", new: "match_typed_subject_alt_names: []"},
		{name: "port out of range", old: "port_value: 8080", new: "port_value: 70000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Contains(t, string(raw), tt.old)
			broken := strings.Replace(string(raw), tt.old, tt.new, 1)
			b, err := loadBootstrap([]byte(broken))
			if err == nil {
				_, err = checkBootstrap(b)
			}
			require.Error(t, err)
		})
	}
}

func loadBootstrap(raw []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	b := new(bootstrapv3.Bootstrap)
	if err := protojson.Unmarshal(js, b); err != nil {
		return nil, fmt.Errorf("protojson: %w", err)
	}
	return b, nil
}

// checked is what checkBootstrap found, for the test to compare.
type checked struct {
	secrets       []string
	requireClient bool
}

// checkBootstrap validates b as the injection webhook validates what it
// renders (inject.ValidateBootstrap), also requiring exact SPIFFE ID
// matchers, and collects what the test compares.
func checkBootstrap(b *bootstrapv3.Bootstrap) (checked, error) {
	if err := inject.ValidateBootstrap(b); err != nil {
		return checked{}, err
	}
	var c checked
	err := inject.Walk(b, func(m proto.Message) error {
		switch m := m.(type) {
		case *tlsv3.SubjectAltNameMatcher:
			if !strings.HasPrefix(m.GetMatcher().GetExact(), "spiffe://") {
				return fmt.Errorf("SAN matcher %v is not an exact SPIFFE ID", m)
			}
		case *tlsv3.SdsSecretConfig:
			c.secrets = append(c.secrets, m.GetName())
		case *tlsv3.DownstreamTlsContext:
			c.requireClient = c.requireClient || m.GetRequireClientCertificate().GetValue()
		}
		return nil
	})
	return c, err
}
