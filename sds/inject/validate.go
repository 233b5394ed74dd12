package inject

import (
	"fmt"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// ValidateBootstrap checks b the way Envoy does at load — the generated
// ValidateAll rules, also on every message packed in an Any (ValidateAll
// stops at an Any) — plus what Envoy checks only later or not at all:
// every referenced cluster exists, every TLS context has a 1.2 floor, and
// every validation context matches peers by URI SAN (trusting the bundle
// alone would admit any workload of the trust domain).
func ValidateBootstrap(b *bootstrapv3.Bootstrap) error {
	if err := b.ValidateAll(); err != nil {
		return err
	}
	clusters := map[string]bool{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = true
	}
	need := func(name string) error {
		if !clusters[name] {
			return fmt.Errorf("reference to undefined cluster %q", name)
		}
		return nil
	}
	return Walk(b, func(m proto.Message) error {
		switch m := m.(type) {
		case *routev3.RouteAction:
			return need(m.GetCluster())
		case *tcpproxyv3.TcpProxy:
			return need(m.GetCluster())
		case *corev3.GrpcService_EnvoyGrpc:
			return need(m.GetClusterName())
		case *tlsv3.CommonTlsContext:
			if m.GetTlsParams().GetTlsMinimumProtocolVersion() < tlsv3.TlsParameters_TLSv1_2 {
				return fmt.Errorf("TLS context allows versions below 1.2")
			}
		case *tlsv3.CertificateValidationContext:
			if len(m.GetMatchTypedSubjectAltNames()) == 0 {
				return fmt.Errorf("validation context without a SPIFFE ID match")
			}
		case *tlsv3.SubjectAltNameMatcher:
			if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
				return fmt.Errorf("SAN matcher %v is not on the URI SAN", m)
			}
		}
		return nil
	})
}

// Walk calls visit on every message under m, unpacking each Any and
// validating what it holds on the way (ValidateAll stops at an Any).
func Walk(m proto.Message, visit func(proto.Message) error) error {
	return walk(m.ProtoReflect(), visit)
}

// walk visits every message under m, unpacking and validating each Any.
func walk(m protoreflect.Message, visit func(proto.Message) error) error {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("unpack %s: %w", a.GetTypeUrl(), err)
		}
		if v, ok := inner.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				return err
			}
		}
		return walk(inner.ProtoReflect(), visit)
	}
	if err := visit(m.Interface()); err != nil {
		return err
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		err = walkField(fd, v, visit)
		return err == nil
	})
	return err
}

func walkField(fd protoreflect.FieldDescriptor, v protoreflect.Value, visit func(proto.Message) error) error {
	switch {
	case fd.IsList() && fd.Message() != nil:
		for i := 0; i < v.List().Len(); i++ {
			if err := walk(v.List().Get(i).Message(), visit); err != nil {
				return err
			}
		}
	case fd.IsMap() && fd.MapValue().Message() != nil:
		var err error
		v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
			err = walk(mv.Message(), visit)
			return err == nil
		})
		return err
	case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
		return walk(v.Message(), visit)
	}
	return nil
}
