package inject

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
)

// Annotations that shape an injected pod's Envoy. They are read once, at
// admission (CREATE): the rendered bootstrap is frozen into the Envoy
// container's arguments, which Kubernetes does not let anyone edit later.
const (
	// AnnotationInboundPorts lists the app ports that peers reach over mTLS:
	// entries `APP` or `LISTEN=APP`, APP a port number or the name of a port a
	// container of the pod declares. The i-th entry without LISTEN listens on
	// InboundBasePort+i. Default: every TCP port the pod's containers declare;
	// "none" disables inbound.
	AnnotationInboundPorts = "certmesh.io/inbound-ports"
	// AnnotationAllowedPeers lists who may call the inbound ports: SPIFFE IDs
	// (exact), `spiffe://<td>/path/*` (every ID under path) or
	// `spiffe://<td>` (the whole trust domain, the default).
	AnnotationAllowedPeers = "certmesh.io/allowed-peers"
	// AnnotationUpstreams lists the services the app calls through its sidecar:
	// entries `NAME:LOCALPORT=HOST:PORT@SPIFFE-ID`. The app connects in
	// plaintext to 127.0.0.1:LOCALPORT; Envoy connects to HOST:PORT over mTLS
	// and accepts only a server proving SPIFFE-ID.
	AnnotationUpstreams = "certmesh.io/upstreams"
)

// Ports the sidecar keeps for itself.
const (
	AdminPort       = 15000
	InboundBasePort = 15006
)

// Bounds that keep a rendered bootstrap well under Linux's 128 KiB limit on
// one argument (it is passed to Envoy as --config-yaml).
const (
	maxInbound   = 16
	maxUpstreams = 32
	maxPeers     = 32
)

// ErrBadAnnotation reports an annotation the webhook cannot render; the pod
// is refused with the detail.
var ErrBadAnnotation = errors.New("bad annotation")

// Sidecar is what a pod's Envoy does, parsed and checked.
type Sidecar struct {
	TrustDomain spiffeid.TrustDomain
	// Node and Cluster name the Envoy node (logs, admin).
	Node, Cluster string
	Inbound       []Inbound
	// AllowedPeers match the caller's URI SAN on every inbound port.
	AllowedPeers []PeerMatch
	Upstreams    []Upstream
}

// Inbound is one mTLS listener in front of an app port.
type Inbound struct {
	ListenPort, AppPort uint32
	// HTTP: the port's name says http or grpc (Istio's convention), so Envoy
	// parses HTTP and tells the app the caller's ID (x-forwarded-client-cert).
	HTTP bool
}

// PeerMatch matches a peer's SPIFFE ID exactly, or by prefix.
type PeerMatch struct {
	Exact, Prefix string
}

// Upstream is one loopback listener whose traffic leaves over mTLS.
type Upstream struct {
	Name      string
	LocalPort uint32
	Host      string
	Port      uint32
	ID        spiffeid.ID
}

// ParseSidecar reads the pod's declared ports and certmesh annotations.
// Errors wrap ErrBadAnnotation and name the annotation and entry.
func ParseSidecar(td spiffeid.TrustDomain, pod *corev1.Pod) (Sidecar, error) {
	name := pod.Name
	if name == "" {
		name = pod.GenerateName
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	s := Sidecar{TrustDomain: td, Node: name + "." + pod.Namespace, Cluster: sa + "." + pod.Namespace}
	var err error
	if s.Inbound, err = parseInbound(pod); err != nil {
		return s, err
	}
	if s.AllowedPeers, err = parsePeers(td, pod.Annotations[AnnotationAllowedPeers]); err != nil {
		return s, err
	}
	if s.Upstreams, err = parseUpstreams(td, pod.Annotations[AnnotationUpstreams]); err != nil {
		return s, err
	}
	return s, checkPorts(s, declaredPorts(pod))
}

func badf(annotation, format string, args ...any) error {
	return fmt.Errorf("%w %s: %s", ErrBadAnnotation, annotation, fmt.Sprintf(format, args...))
}

// entries splits a list on commas and white space.
func entries(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' || r == '\r' })
}

func declaredPorts(pod *corev1.Pod) []corev1.ContainerPort {
	var out []corev1.ContainerPort
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
				out = append(out, p)
			}
		}
	}
	return out
}

func isHTTPName(name string) bool {
	for _, p := range []string{"http", "grpc"} {
		if name == p || strings.HasPrefix(name, p+"-") || strings.HasPrefix(name, p+"2") {
			return true
		}
	}
	return false
}

func parseInbound(pod *corev1.Pod) ([]Inbound, error) {
	declared := declaredPorts(pod)
	v, set := pod.Annotations[AnnotationInboundPorts]
	if strings.TrimSpace(v) == "none" {
		return nil, nil
	}
	var list []string
	if set {
		list = entries(v)
	} else {
		for _, p := range declared {
			list = append(list, strconv.Itoa(int(p.ContainerPort)))
		}
	}
	if len(list) > maxInbound {
		return nil, badf(AnnotationInboundPorts, "%d ports, at most %d", len(list), maxInbound)
	}
	var out []Inbound
	for i, e := range list {
		in := Inbound{ListenPort: uint32(InboundBasePort + i)}
		app := e
		if l, a, ok := strings.Cut(e, "="); ok {
			p, err := parsePort(l)
			if err != nil {
				return nil, badf(AnnotationInboundPorts, "%q: listen port: %v", e, err)
			}
			in.ListenPort, app = p, a
		}
		p, name, err := resolveAppPort(app, declared)
		if err != nil {
			return nil, badf(AnnotationInboundPorts, "%q: %v", e, err)
		}
		in.AppPort, in.HTTP = p, isHTTPName(name)
		out = append(out, in)
	}
	return out, nil
}

// resolveAppPort takes a number or a declared port's name; it returns the
// number and the declared name (if any).
func resolveAppPort(v string, declared []corev1.ContainerPort) (uint32, string, error) {
	if n, err := parsePort(v); err == nil {
		for _, d := range declared {
			if uint32(d.ContainerPort) == n {
				return n, d.Name, nil
			}
		}
		return n, "", nil
	}
	for _, d := range declared {
		if d.Name != "" && d.Name == v {
			return uint32(d.ContainerPort), d.Name, nil
		}
	}
	return 0, "", fmt.Errorf("not a port number nor the name of a declared TCP container port")
}

func parsePort(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", v)
	}
	return uint32(n), nil
}

func parsePeers(td spiffeid.TrustDomain, v string) ([]PeerMatch, error) {
	list := entries(v)
	if len(list) == 0 {
		return []PeerMatch{{Prefix: td.IDString() + "/"}}, nil
	}
	if len(list) > maxPeers {
		return nil, badf(AnnotationAllowedPeers, "%d entries, at most %d", len(list), maxPeers)
	}
	out := make([]PeerMatch, 0, len(list))
	for _, e := range list {
		m, err := parsePeer(td, e)
		if err != nil {
			return nil, badf(AnnotationAllowedPeers, "%q: %v", e, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func parsePeer(td spiffeid.TrustDomain, e string) (PeerMatch, error) {
	wild := strings.HasSuffix(e, "/*")
	id, err := spiffeid.FromString(strings.TrimSuffix(e, "/*"))
	if err != nil {
		return PeerMatch{}, err
	}
	if id.TrustDomain() != td {
		return PeerMatch{}, fmt.Errorf("trust domain %q is not this mesh's %q", id.TrustDomain().Name(), td.Name())
	}
	if wild || id.Path() == "" {
		return PeerMatch{Prefix: id.String() + "/"}, nil
	}
	return PeerMatch{Exact: id.String()}, nil
}

// upstreamName is a DNS label: it becomes part of Envoy listener, cluster and
// stat names.
var upstreamName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

func parseUpstreams(td spiffeid.TrustDomain, v string) ([]Upstream, error) {
	list := entries(v)
	if len(list) > maxUpstreams {
		return nil, badf(AnnotationUpstreams, "%d entries, at most %d", len(list), maxUpstreams)
	}
	var out []Upstream
	for _, e := range list {
		u, err := parseUpstream(td, e)
		if err != nil {
			return nil, badf(AnnotationUpstreams, "%q: %v (want NAME:LOCALPORT=HOST:PORT@SPIFFE-ID)", e, err)
		}
		if slices.ContainsFunc(out, func(o Upstream) bool { return o.Name == u.Name }) {
			return nil, badf(AnnotationUpstreams, "name %q used twice", u.Name)
		}
		out = append(out, u)
	}
	return out, nil
}

func parseUpstream(td spiffeid.TrustDomain, e string) (Upstream, error) {
	local, remote, ok := strings.Cut(e, "=")
	if !ok {
		return Upstream{}, errors.New("no '='")
	}
	name, lport, ok := strings.Cut(local, ":")
	if !ok || !upstreamName.MatchString(name) {
		return Upstream{}, errors.New("NAME must be a lower-case DNS label of at most 32 characters, followed by ':'")
	}
	var u Upstream
	var err error
	u.Name = name
	if u.LocalPort, err = parsePort(lport); err != nil {
		return u, fmt.Errorf("local port: %w", err)
	}
	// SPIFFE IDs never contain '@', hosts neither: the last '@' splits.
	i := strings.LastIndex(remote, "@")
	if i < 0 {
		return u, errors.New("no '@SPIFFE-ID'")
	}
	host, port, err := net.SplitHostPort(remote[:i])
	if err != nil {
		return u, err
	}
	if u.Port, err = parsePort(port); err != nil {
		return u, err
	}
	if net.ParseIP(host) == nil && !validHost(host) {
		return u, fmt.Errorf("host %q is neither an IP nor a DNS name", host)
	}
	u.Host = host
	if u.ID, err = spiffeid.FromString(remote[i+1:]); err != nil {
		return u, err
	}
	if u.ID.TrustDomain() != td {
		return u, fmt.Errorf("trust domain %q is not this mesh's %q", u.ID.TrustDomain().Name(), td.Name())
	}
	if u.ID.Path() == "" {
		return u, errors.New("SPIFFE-ID must name one workload, not the trust domain")
	}
	return u, nil
}

var dnsLabel = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

func validHost(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if !dnsLabel.MatchString(l) {
			return false
		}
	}
	return true
}

// checkPorts refuses two listeners on one port, and listeners on a port the
// sidecar or a container already uses.
func checkPorts(s Sidecar, declared []corev1.ContainerPort) error {
	used := map[uint32]string{AdminPort: "the sidecar's admin port"}
	for _, d := range declared {
		used[uint32(d.ContainerPort)] = fmt.Sprintf("container port %d", d.ContainerPort)
	}
	claim := func(annotation string, port uint32, what string) error {
		if prev, ok := used[port]; ok {
			return badf(annotation, "%s: port %d is already %s", what, port, prev)
		}
		used[port] = what
		return nil
	}
	for _, in := range s.Inbound {
		if err := claim(AnnotationInboundPorts, in.ListenPort, fmt.Sprintf("inbound listener for app port %d", in.AppPort)); err != nil {
			return err
		}
	}
	for _, u := range s.Upstreams {
		if err := claim(AnnotationUpstreams, u.LocalPort, fmt.Sprintf("upstream %q", u.Name)); err != nil {
			return err
		}
	}
	return nil
}
