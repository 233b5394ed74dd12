package ingress

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/certmesh/certmesh/edge"
)

func ptr[T any](v T) *T { return &v }

func httpsListener(name, host string, refs ...gatewayv1.SecretObjectReference) gatewayv1.Listener {
	l := gatewayv1.Listener{
		Name: gatewayv1.SectionName(name), Port: 443, Protocol: gatewayv1.HTTPSProtocolType,
		TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: refs},
	}
	if host != "" {
		l.Hostname = ptr(gatewayv1.Hostname(host))
	}
	return l
}

func httpListener(host string) gatewayv1.Listener {
	l := gatewayv1.Listener{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}
	if host != "" {
		l.Hostname = ptr(gatewayv1.Hostname(host))
	}
	return l
}

func certRef(name string) gatewayv1.SecretObjectReference {
	return gatewayv1.SecretObjectReference{Name: gatewayv1.ObjectName(name)}
}

func testGateway(listeners ...gatewayv1.Listener) *gatewayv1.Gateway {
	return &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "shop", UID: "gw-uid"},
		Spec:       gatewayv1.GatewaySpec{GatewayClassName: "any", Listeners: listeners},
	}
}

func TestGatewayCertificates(t *testing.T) {
	http := Issuer{Solver: edge.SolverConfig{Type: edge.HTTP01}}
	dns := Issuer{Solver: edge.SolverConfig{Type: edge.DNS01, DNS: edge.DNSSolverConfig{Provider: "x"}}}
	passthrough := httpsListener("pass", "p.example", certRef("p"))
	passthrough.Protocol, passthrough.TLS.Mode = gatewayv1.TLSProtocolType, ptr(gatewayv1.TLSModePassthrough)
	tlsTerminate := httpsListener("tls", "t.example", certRef("t"))
	tlsTerminate.Protocol = gatewayv1.TLSProtocolType
	other := certRef("elsewhere")
	other.Namespace = ptr(gatewayv1.Namespace("vault"))
	sameNS := certRef("same")
	sameNS.Namespace = ptr(gatewayv1.Namespace("shop"))
	foreignKind := certRef("cm")
	foreignKind.Kind = ptr(gatewayv1.Kind("ConfigMap"))
	for _, tc := range []struct {
		name         string
		gw           *gatewayv1.Gateway
		iss          Issuer
		wantNames    map[string][]string
		wantProblems []string
	}{
		{
			name:      "https listener with an http listener beside it",
			gw:        testGateway(httpListener(""), httpsListener("https", "Shop.Example.", certRef("shop-tls"))),
			iss:       http,
			wantNames: map[string][]string{"shop/shop-tls": {"shop.example"}},
		},
		{
			name: "listeners naming one secret merge; other secrets are separate",
			gw: testGateway(httpListener("*.example"),
				httpsListener("a", "a.example", certRef("s")),
				httpsListener("b", "b.example", certRef("s"), certRef("b-too"))),
			iss:       http,
			wantNames: map[string][]string{"shop/s": {"a.example", "b.example"}, "shop/b-too": {"b.example"}},
		},
		{
			name:      "TLS terminate counts; passthrough and plain HTTP do not",
			gw:        testGateway(httpListener(""), passthrough, tlsTerminate),
			iss:       http,
			wantNames: map[string][]string{"shop/t": {"t.example"}},
		},
		{
			name:         "no hostname",
			gw:           testGateway(httpListener(""), httpsListener("https", "", certRef("s"))),
			iss:          http,
			wantNames:    map[string][]string{},
			wantProblems: []string{`listener "https" has no hostname`},
		},
		{
			name:         "no certificateRefs",
			gw:           testGateway(httpListener(""), httpsListener("https", "a.example")),
			iss:          http,
			wantNames:    map[string][]string{},
			wantProblems: []string{"names no tls.certificateRefs"},
		},
		{
			name:         "another namespace and another kind are refused, the same namespace spelt out is fine",
			gw:           testGateway(httpListener(""), httpsListener("https", "a.example", other, foreignKind, sameNS)),
			iss:          http,
			wantNames:    map[string][]string{"shop/same": {"a.example"}},
			wantProblems: []string{"Secret vault/elsewhere is in another namespace", `ConfigMap "cm" is not a core Secret`},
		},
		{
			name:         "http-01 without an HTTP listener for the host",
			gw:           testGateway(httpListener("other.example"), httpsListener("https", "a.example", certRef("s"))),
			iss:          http,
			wantNames:    map[string][]string{},
			wantProblems: []string{"no HTTP listener accepts the host"},
		},
		{
			name: "http-01 through an HTTP listener closed to HTTPRoutes",
			gw: testGateway(withRoutes(httpListener(""), gatewayv1.NamespacesFromAll, gatewayv1.RouteGroupKind{Kind: "GRPCRoute"}),
				httpsListener("https", "a.example", certRef("s"))),
			iss:          http,
			wantNames:    map[string][]string{},
			wantProblems: []string{`listener "http" of Gateway shop/edge: allowedRoutes.kinds does not list HTTPRoute`},
		},
		{
			name: "one HTTP listener for the host is enough",
			gw: testGateway(withRoutes(httpListener("a.example"), gatewayv1.NamespacesFromNone), httpListener(""),
				httpsListener("https", "a.example", certRef("s"))),
			iss:       http,
			wantNames: map[string][]string{"shop/s": {"a.example"}},
		},
		{
			name:      "dns-01 needs no HTTP listener",
			gw:        testGateway(httpsListener("https", "a.example", certRef("s"))),
			iss:       dns,
			wantNames: map[string][]string{"shop/s": {"a.example"}},
		},
		{
			name:         "wildcard needs dns-01",
			gw:           testGateway(httpListener(""), httpsListener("https", "*.example", certRef("w"))),
			iss:          http,
			wantNames:    map[string][]string{},
			wantProblems: []string{"wildcard hosts need a dns-01 issuer"},
		},
		{
			name:      "wildcard with dns-01",
			gw:        testGateway(httpsListener("https", "*.example", certRef("w"))),
			iss:       dns,
			wantNames: map[string][]string{"shop/w": {"*.example"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names := map[string][]string{}
			var problems []string
			for _, d := range GatewayCertificates(tc.gw, nil, "le", tc.iss) {
				if d.Problem != "" {
					problems = append(problems, d.Problem)
					continue
				}
				require.Equal(t, "le", d.Spec.Issuer)
				require.Equal(t, tc.iss.Solver.Type, d.Spec.Solver.Type)
				names[d.Spec.Name] = d.Spec.DNSNames
			}
			require.Equal(t, tc.wantNames, names)
			require.Len(t, problems, len(tc.wantProblems), "%q", problems)
			for i, want := range tc.wantProblems {
				require.Contains(t, problems[i], want)
			}
		})
	}
}

// withRoutes sets l's allowedRoutes: namespaces from, and kinds.
func withRoutes(l gatewayv1.Listener, from gatewayv1.FromNamespaces, kinds ...gatewayv1.RouteGroupKind) gatewayv1.Listener {
	l.AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &from}, Kinds: kinds}
	return l
}

func TestAcceptsHost(t *testing.T) {
	for _, tc := range []struct {
		listener string
		host     string
		want     bool
	}{
		{"", "a.example", true},
		{"a.example", "a.example", true},
		{"A.Example", "a.example", true},
		{"b.example", "a.example", false},
		{"*.example", "a.example", true},
		{"*.example", "x.a.example", true},
		{"*.example", "example", false},
		{"*.example", ".example", false},
	} {
		require.Equal(t, tc.want, acceptsHost(httpListener(tc.listener), tc.host), "listener %q host %q", tc.listener, tc.host)
	}
	require.False(t, acceptsHost(httpsListener("https", "a.example", certRef("s")), "a.example"),
		"an HTTPS listener does not take the ACME CA's plain-HTTP request")
}

func TestGatewayRoute(t *testing.T) {
	ctx := context.Background()
	client, gws := fake.NewClientset(), gatewayfake.NewClientset()
	r := newGatewayRoute(&solverBackend{client: client, gateways: gws, podIP: "10.0.0.7", port: 8089}, testGateway())

	require.NoError(t, r.Route(ctx, "a.example", "tok", "tok.key"))
	require.NoError(t, r.Route(ctx, "a.example", "tok", "tok.key"), "idempotent")
	name := objectName("a.example", "tok")
	hr, err := gws.GatewayV1().HTTPRoutes("shop").Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, []gatewayv1.Hostname{"a.example"}, hr.Spec.Hostnames)
	require.Len(t, hr.Spec.ParentRefs, 1)
	require.Equal(t, gatewayv1.ObjectName("edge"), hr.Spec.ParentRefs[0].Name)
	match := hr.Spec.Rules[0].Matches[0].Path
	require.Equal(t, gatewayv1.PathMatchExact, *match.Type)
	require.Equal(t, "/.well-known/acme-challenge/tok", *match.Value)
	backend := hr.Spec.Rules[0].BackendRefs[0]
	require.Equal(t, gatewayv1.ObjectName(name), backend.Name)
	require.EqualValues(t, 80, *backend.Port)
	owner := hr.OwnerReferences[0]
	require.Equal(t, "gateway.networking.k8s.io/v1", owner.APIVersion)
	require.Equal(t, "Gateway", owner.Kind)
	require.Equal(t, "edge", owner.Name)
	_, err = client.CoreV1().Services("shop").Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err, "the Service the route sends to")
	ings, err := client.NetworkingV1().Ingresses("shop").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Empty(t, ings.Items, "a Gateway's challenge is routed by an HTTPRoute, not an Ingress")

	require.NoError(t, r.Unroute(ctx, "a.example", "tok"))
	require.NoError(t, r.Unroute(ctx, "a.example", "tok"), "gone is fine")
	routes, err := gws.GatewayV1().HTTPRoutes("shop").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Empty(t, routes.Items)
}

// TestProcessGateway runs the Gateway watch on fake clientsets whose discovery
// serves the Gateway API.
func TestProcessGateway(t *testing.T) {
	ctx := context.Background()
	gw := testGateway(httpListener(""), httpsListener("https", "shop.example", certRef("shop-tls")))
	gw.Annotations = map[string]string{AnnotationIssuer: "le"}
	ing := annotated("web", "le", networkingv1.IngressTLS{SecretName: "shop-tls", Hosts: []string{"web.example"}})
	client := fake.NewClientset(issuersCM("le:\n  directory: https://acme.test/dir\n"), ing)
	client.Resources = []*metav1.APIResourceList{{GroupVersion: gatewayAPIGroupVersion, APIResources: []metav1.APIResource{{Name: "gateways", Kind: "Gateway", Namespaced: true}}}}
	c := startedWithGateways(t, client, gatewayClient(t, gw))

	require.NoError(t, c.ProcessItem(ctx, GatewayKey("shop", "edge")))
	require.NoError(t, c.ProcessItem(ctx, GatewayKey("shop", "edge")), "idempotent")
	st := c.Status()
	require.Len(t, st, 1)
	require.Equal(t, "shop/edge", st[0].Gateway)
	require.Empty(t, st[0].Ingress)
	require.Equal(t, "shop/shop-tls", st[0].Secret)

	require.NoError(t, c.ProcessItem(ctx, IngressKey("shop", "web")))
	evs := events(t, client, ReasonConflict)
	require.Len(t, evs, 1, "an Ingress naming a Gateway's Secret is refused")
	require.Equal(t, "Ingress", evs[0].InvolvedObject.Kind)
	require.Contains(t, evs[0].Message, "Gateway shop/edge")

	// The Gateway goes away: its certificate is released and the Ingress may take it.
	require.NoError(t, c.cfg.Gateways.GatewayV1().Gateways("shop").Delete(ctx, "edge", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		require.NoError(t, c.ProcessItem(ctx, GatewayKey("shop", "edge")))
		return len(c.Status()) == 0
	}, 5*time.Second, 20*time.Millisecond)
	require.NoError(t, c.ProcessItem(ctx, IngressKey("shop", "web")))
	require.Equal(t, map[string]string{"shop/shop-tls": "shop/web"}, statusNames(c))
}

func TestProcessGatewayProblemsBecomeEvents(t *testing.T) {
	gw := testGateway(httpsListener("https", "", certRef("s")))
	gw.Annotations = map[string]string{AnnotationCertManagerCluster: "le"}
	client := fake.NewClientset(issuersCM("le:\n  directory: https://acme.test/dir\n"))
	client.Resources = []*metav1.APIResourceList{{GroupVersion: gatewayAPIGroupVersion, APIResources: []metav1.APIResource{{Name: "gateways"}}}}
	c := startedWithGateways(t, client, gatewayClient(t, gw))
	require.NoError(t, c.ProcessItem(context.Background(), GatewayKey("shop", "edge")))
	require.Empty(t, c.Status())
	evs := events(t, client, ReasonBadSpec)
	require.Len(t, evs, 1)
	require.Equal(t, corev1.ObjectReference{
		APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway", Namespace: "shop", Name: "edge", UID: "gw-uid",
	}, evs[0].InvolvedObject)
	require.Contains(t, evs[0].Message, "no hostname")
}

func TestGatewayAPIServed(t *testing.T) {
	client := fake.NewClientset()
	served, err := gatewayAPIServed(client.Discovery())
	require.NoError(t, err, "a missing group is not an error")
	require.False(t, served[resourceGateways])
	client.Resources = []*metav1.APIResourceList{{GroupVersion: gatewayAPIGroupVersion, APIResources: []metav1.APIResource{{Name: "httproutes"}}}}
	served, err = gatewayAPIServed(client.Discovery())
	require.NoError(t, err)
	require.False(t, served[resourceGateways], "HTTPRoutes alone are not Gateways")
	client.Resources[0].APIResources = append(client.Resources[0].APIResources, metav1.APIResource{Name: "gateways"}, metav1.APIResource{Name: "listenersets"})
	served, err = gatewayAPIServed(client.Discovery())
	require.NoError(t, err)
	require.True(t, served[resourceGateways])
	require.True(t, served[resourceListenerSets])
}

func testListenerSet(parentNS string, entries ...gatewayv1.Listener) *gatewayv1.ListenerSet {
	ls := &gatewayv1.ListenerSet{
		ObjectMeta: metav1.ObjectMeta{Name: "team", Namespace: "team-a", UID: "ls-uid", Annotations: map[string]string{AnnotationIssuer: "le"}},
		Spec:       gatewayv1.ListenerSetSpec{ParentRef: gatewayv1.ParentGatewayReference{Name: "edge"}},
	}
	if parentNS != "" {
		ls.Spec.ParentRef.Namespace = ptr(gatewayv1.Namespace(parentNS))
	}
	for _, l := range entries {
		ls.Spec.Listeners = append(ls.Spec.Listeners, gatewayv1.ListenerEntry(l))
	}
	return ls
}

// admitting makes gw admit ListenerSets by the namespace rule from (a selector of
// team=a with Selector).
func admitting(gw *gatewayv1.Gateway, from gatewayv1.FromNamespaces) *gatewayv1.Gateway {
	gw.Spec.AllowedListeners = &gatewayv1.AllowedListeners{Namespaces: &gatewayv1.ListenerNamespaces{From: &from}}
	if from == gatewayv1.NamespacesFromSelector {
		gw.Spec.AllowedListeners.Namespaces.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}
	}
	return gw
}

func TestListenerSetCertificates(t *testing.T) {
	http := Issuer{Solver: edge.SolverConfig{Type: edge.HTTP01}}
	parent := admitting(testGateway(withRoutes(httpListener(""), gatewayv1.NamespacesFromAll)), gatewayv1.NamespacesFromAll)
	https := httpsListener("https", "team.example", certRef("team-tls"))

	got := ListenerSetCertificates(testListenerSet("shop", https), parent, nil, "le", http)
	require.Len(t, got, 1)
	require.Empty(t, got[0].Problem)
	require.Equal(t, "team-a/team-tls", got[0].Spec.Name, "the Secret is in the ListenerSet's namespace")
	require.Equal(t, []string{"team.example"}, got[0].Spec.DNSNames)

	got = ListenerSetCertificates(testListenerSet("shop", https), nil, nil, "le", http)
	require.Len(t, got, 1)
	require.Contains(t, got[0].Problem, "its parent Gateway shop/edge is not found")

	got = ListenerSetCertificates(testListenerSet("shop", https, httpListener("team.example")), nil, nil, "le", http)
	require.Len(t, got, 1)
	require.Empty(t, got[0].Problem, "its own HTTP listener is enough: Same is the ListenerSet's namespace")

	ref := certRef("x")
	ref.Namespace = ptr(gatewayv1.Namespace("shop"))
	got = ListenerSetCertificates(testListenerSet("shop", httpsListener("https", "team.example", ref)), parent, nil, "le", http)
	require.Len(t, got, 1)
	require.Contains(t, got[0].Problem, "Secret shop/x is in another namespace")

	// The parent's HTTP listener keeps the default allowedRoutes (Same): the
	// challenge HTTPRoute, in team-a, would not attach to it.
	sameOnly := admitting(testGateway(httpListener("")), gatewayv1.NamespacesFromAll)
	got = ListenerSetCertificates(testListenerSet("shop", https), sameOnly, nil, "le", http)
	require.Len(t, got, 1)
	require.Contains(t, got[0].Problem, `admits certmesh's challenge HTTPRoute from namespace team-a (listener "http" of Gateway shop/edge: allowedRoutes.namespaces from: Same admits only namespace shop, not team-a)`)
	dns := Issuer{Solver: edge.SolverConfig{Type: edge.DNS01, DNS: edge.DNSSolverConfig{Provider: "x"}}}
	got = ListenerSetCertificates(testListenerSet("shop", https), sameOnly, nil, "le", dns)
	require.Empty(t, got[0].Problem, "dns-01 needs no route")
}

// TestListenerSetAdmission: a ListenerSet its parent does not admit gets no
// certificate, whatever the solver, and the reason names the rule.
func TestListenerSetAdmission(t *testing.T) {
	dns := Issuer{Solver: edge.SolverConfig{Type: edge.DNS01, DNS: edge.DNSSolverConfig{Provider: "x"}}}
	https := httpsListener("https", "team.example", certRef("team-tls"))
	for _, tc := range []struct {
		name     string
		parent   *gatewayv1.Gateway
		parentNS string
		nsLabels map[string]string
		problem  string
	}{
		{name: "unset admits none", parent: testGateway(), problem: "spec.allowedListeners is unset, which admits no ListenerSet"},
		{name: "None", parent: admitting(testGateway(), gatewayv1.NamespacesFromNone), problem: "from: None admits no namespace"},
		{name: "Same, other namespace", parent: admitting(testGateway(), gatewayv1.NamespacesFromSame), problem: "from: Same admits only namespace shop, not team-a"},
		{name: "Same, same namespace", parent: sameNamespace(admitting(testGateway(), gatewayv1.NamespacesFromSame)), parentNS: "team-a"},
		{name: "All", parent: admitting(testGateway(), gatewayv1.NamespacesFromAll)},
		{name: "Selector, matching", parent: admitting(testGateway(), gatewayv1.NamespacesFromSelector), nsLabels: map[string]string{"team": "a"}},
		{name: "Selector, not matching", parent: admitting(testGateway(), gatewayv1.NamespacesFromSelector), nsLabels: map[string]string{"team": "b"},
			problem: "from: Selector (team=a) does not match namespace team-a"},
		{name: "Selector, no labels", parent: admitting(testGateway(), gatewayv1.NamespacesFromSelector),
			problem: "does not match namespace team-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parentNS := tc.parentNS
			if parentNS == "" {
				parentNS = "shop"
			}
			got := ListenerSetCertificates(testListenerSet(parentNS, https), tc.parent, tc.nsLabels, "le", dns)
			require.Len(t, got, 1)
			if tc.problem == "" {
				require.Empty(t, got[0].Problem)
				require.Equal(t, "team-a/team-tls", got[0].Spec.Name)
				return
			}
			require.Contains(t, got[0].Problem, "its parent Gateway "+parentNS+"/edge does not admit it: ")
			require.Contains(t, got[0].Problem, tc.problem)
		})
	}
}

func sameNamespace(gw *gatewayv1.Gateway) *gatewayv1.Gateway {
	gw.Namespace = "team-a"
	return gw
}

func TestAdmitsNamespace(t *testing.T) {
	from := func(f gatewayv1.FromNamespaces) *gatewayv1.FromNamespaces { return &f }
	bad := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Sometimes"}}}
	for _, tc := range []struct {
		from     *gatewayv1.FromNamespaces
		selector *metav1.LabelSelector
		ns       string
		want     bool
		why      string
	}{
		{from: nil, ns: "shop", want: true, why: "from: Same"}, // the default given
		{from: nil, ns: "team-a", want: false, why: "admits only namespace shop"},
		{from: from(""), ns: "team-a", want: false, why: "admits only namespace shop"},
		{from: from(gatewayv1.NamespacesFromAll), ns: "team-a", want: true},
		{from: from(gatewayv1.NamespacesFromSelector), ns: "team-a", want: false, why: "has no selector"},
		{from: from(gatewayv1.NamespacesFromSelector), selector: bad, ns: "team-a", want: false, why: "invalid selector"},
		{from: from(gatewayv1.NamespacesFromSelector), selector: &metav1.LabelSelector{}, ns: "team-a", want: true, why: "from: Selector"},
		{from: from("Nearby"), ns: "shop", want: false, why: `from: "Nearby" is not a value certmesh knows`},
	} {
		ok, why := admitsNamespace(tc.from, tc.selector, gatewayv1.NamespacesFromSame, "shop", tc.ns, map[string]string{"team": "a"})
		require.Equal(t, tc.want, ok, "%v %q", tc.from, tc.ns)
		require.Contains(t, why, tc.why)
	}
}

func TestUsesNamespaceSelector(t *testing.T) {
	plain := testGateway(httpListener(""))
	require.False(t, usesNamespaceSelector(plain, nil))
	require.False(t, usesNamespaceSelector(nil, testListenerSet("shop")))
	require.True(t, usesNamespaceSelector(testGateway(withRoutes(httpListener(""), gatewayv1.NamespacesFromSelector)), nil))
	selecting := admitting(testGateway(), gatewayv1.NamespacesFromSelector)
	require.False(t, usesNamespaceSelector(selecting, nil), "a Gateway's own policy does not look at allowedListeners")
	require.True(t, usesNamespaceSelector(selecting, testListenerSet("shop")))
	require.True(t, usesNamespaceSelector(nil, testListenerSet("shop", withRoutes(httpListener(""), gatewayv1.NamespacesFromSelector))))
}

func TestParentGateway(t *testing.T) {
	ns, name, ok := parentGateway(testListenerSet(""))
	require.Equal(t, []any{"team-a", "edge", true}, []any{ns, name, ok}, "the parent defaults to the ListenerSet's namespace")
	ls := testListenerSet("shop")
	ls.Spec.ParentRef.Kind = ptr(gatewayv1.Kind("Mesh"))
	_, _, ok = parentGateway(ls)
	require.False(t, ok)
}

func TestListenerSetRoute(t *testing.T) {
	ctx := context.Background()
	gws := gatewayfake.NewClientset()
	ls := testListenerSet("shop")
	r := newListenerSetRoute(&solverBackend{client: fake.NewClientset(), gateways: gws, podIP: "10.0.0.7", port: 8089}, ls, "shop", "edge")
	require.NoError(t, r.Route(ctx, "team.example", "tok", "tok.key"))
	hr, err := gws.GatewayV1().HTTPRoutes("team-a").Get(ctx, objectName("team.example", "tok"), metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, hr.Spec.ParentRefs, 2)
	require.Equal(t, gatewayv1.Kind("ListenerSet"), *hr.Spec.ParentRefs[0].Kind)
	require.Equal(t, gatewayv1.ObjectName("team"), hr.Spec.ParentRefs[0].Name)
	require.Equal(t, gatewayv1.ObjectName("edge"), hr.Spec.ParentRefs[1].Name)
	require.Equal(t, gatewayv1.Namespace("shop"), *hr.Spec.ParentRefs[1].Namespace)
	require.Equal(t, "ListenerSet", hr.OwnerReferences[0].Kind)
	require.NoError(t, r.Unroute(ctx, "team.example", "tok"))
	_, err = gws.GatewayV1().HTTPRoutes("team-a").Get(ctx, objectName("team.example", "tok"), metav1.GetOptions{})
	require.Error(t, err)
}

// TestProcessListenerSet: a ListenerSet whose parent Gateway has no HTTP listener is
// refused; once the Gateway gets one, the Gateway's event re-enqueues the
// ListenerSet and it gets its certificate.
func TestProcessListenerSet(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(issuersCM("le:\n  directory: https://acme.test/dir\n"))
	client.Resources = []*metav1.APIResourceList{{GroupVersion: gatewayAPIGroupVersion, APIResources: []metav1.APIResource{{Name: "gateways"}, {Name: "listenersets"}}}}
	parent := admitting(testGateway(httpsListener("https", "shop.example", certRef("shop-tls"))), gatewayv1.NamespacesFromAll)
	gws := gatewayClient(t, parent)
	_, err := gws.GatewayV1().ListenerSets("team-a").Create(ctx, testListenerSet("shop", httpsListener("https", "team.example", certRef("team-tls"))), metav1.CreateOptions{})
	require.NoError(t, err)
	c := startedWithGateways(t, client, gws)
	require.Eventually(t, func() bool {
		_, store := c.gateways.listenerSets()
		return store != nil && len(store.List()) == 1
	}, 10*time.Second, 10*time.Millisecond)

	require.NoError(t, c.ProcessItem(ctx, ListenerSetKey("team-a", "team")))
	require.Empty(t, c.Status())
	evs := eventsIn(t, client, "team-a", ReasonBadSpec)
	require.Len(t, evs, 1)
	require.Equal(t, "ListenerSet", evs[0].InvolvedObject.Kind)
	require.Contains(t, evs[0].Message, "no HTTP listener accepts the host")

	// The parent gets a plain-HTTP listener: its event enqueues the ListenerSet.
	parent = parent.DeepCopy()
	parent.Spec.Listeners = append(parent.Spec.Listeners, withRoutes(httpListener(""), gatewayv1.NamespacesFromAll))
	_, err = gws.GatewayV1().Gateways("shop").Update(ctx, parent, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		for c.queue.Len() > 0 {
			key, _ := c.queue.Get()
			if key.Kind == KindListenerSet {
				require.Equal(t, ListenerSetKey("team-a", "team"), key)
				require.NoError(t, c.ProcessItem(ctx, key))
			}
			c.queue.Done(key)
		}
		return len(c.Status()) == 1
	}, 10*time.Second, 10*time.Millisecond)
	st := c.Status()[0]
	require.Equal(t, "team-a/team", st.ListenerSet)
	require.Equal(t, "team-a/team-tls", st.Secret)
}

// startedWithGateways is started with a Gateway API client: the informers are synced
// and the Gateway watch is running (discovery must serve gateways).
func startedWithGateways(t *testing.T, client *fake.Clientset, gws *gatewayfake.Clientset) *Controller {
	t.Helper()
	c, err := New(Config{
		Client: client, Gateways: gws, Namespace: testNS, SolverPodIP: "10.0.0.7",
		Edge: edge.Config{HTTP01Addr: "127.0.0.1:8089"},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	stop, err := c.start(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.runGateways(ctx) }()
	t.Cleanup(func() { cancel(); <-done; stop() })
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st := c.gateways.store()
		want := mustList(t, gws)
		return st != nil && len(want) > 0 && len(st.List()) == len(want)
	}, 10*time.Second, 10*time.Millisecond)
	return c
}

// gatewayClient is a fake Gateway API clientset holding gws. They are created through
// the typed client because the tracker's constructor files an object under the first
// version its Go type is registered for, and v1beta1.Gateway is an alias of
// v1.Gateway, so NewSimpleClientset(gw) would hide it from v1 reads; and it is the
// simple tracker because NewClientset's field-managed one has no type information
// for Gateways ("no matches for ... gateways").
func gatewayClient(t *testing.T, gws ...*gatewayv1.Gateway) *gatewayfake.Clientset {
	cs := gatewayfake.NewSimpleClientset()
	for _, gw := range gws {
		_, err := cs.GatewayV1().Gateways(gw.Namespace).Create(context.Background(), gw, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	return cs
}

func mustList(t *testing.T, gws *gatewayfake.Clientset) []gatewayv1.Gateway {
	l, err := gws.GatewayV1().Gateways("").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	return l.Items
}

// TestProcessListenerSetNamespaceSelector: a parent that admits ListenerSets by
// namespace label makes the controller read the ListenerSet's Namespace; a
// ListenerSet in a namespace without the label gets only the reason.
func TestProcessListenerSetNamespaceSelector(t *testing.T) {
	ctx := context.Background()
	teamA := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{"team": "a"}}}
	teamB := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b", Labels: map[string]string{"team": "b"}}}
	client := fake.NewClientset(issuersCM("le:\n  directory: https://acme.test/dir\n"), teamA, teamB)
	client.Resources = []*metav1.APIResourceList{{GroupVersion: gatewayAPIGroupVersion, APIResources: []metav1.APIResource{{Name: "gateways"}, {Name: "listenersets"}}}}
	gws := gatewayClient(t, admitting(testGateway(withRoutes(httpListener(""), gatewayv1.NamespacesFromAll)), gatewayv1.NamespacesFromSelector))
	https := httpsListener("https", "team.example", certRef("team-tls"))
	for _, ns := range []string{"team-a", "team-b"} {
		ls := testListenerSet("shop", https)
		ls.Namespace = ns
		_, err := gws.GatewayV1().ListenerSets(ns).Create(ctx, ls, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	c := startedWithGateways(t, client, gws)
	require.Eventually(t, func() bool {
		_, store := c.gateways.listenerSets()
		return store != nil && len(store.List()) == 2
	}, 10*time.Second, 10*time.Millisecond)

	require.NoError(t, c.ProcessItem(ctx, ListenerSetKey("team-a", "team")))
	require.NoError(t, c.ProcessItem(ctx, ListenerSetKey("team-b", "team")))
	require.Equal(t, map[string]string{"team-a/team-tls": "team-a/team"}, listenerSetNames(c))
	evs := eventsIn(t, client, "team-b", ReasonBadSpec)
	require.Len(t, evs, 1)
	require.Contains(t, evs[0].Message, "its parent Gateway shop/edge does not admit it: spec.allowedListeners.namespaces from: Selector (team=a) does not match namespace team-b")

	// A namespace that cannot be read is an error to retry, not a refusal.
	require.NoError(t, client.CoreV1().Namespaces().Delete(ctx, "team-a", metav1.DeleteOptions{}))
	require.ErrorContains(t, c.ProcessItem(ctx, ListenerSetKey("team-a", "team")), "read its namespace's labels")
	require.Equal(t, map[string]string{"team-a/team-tls": "team-a/team"}, listenerSetNames(c), "a failed read drops nothing")
}

// listenerSetNames maps each certificate to the ListenerSet that owns it.
func listenerSetNames(c *Controller) map[string]string {
	out := map[string]string{}
	for _, s := range c.Status() {
		out[s.Name] = s.ListenerSet
	}
	return out
}
