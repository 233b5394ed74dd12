package ingress

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Attachment: a Gateway decides which objects may attach to it. A ListenerSet is
// served only if its parent's spec.allowedListeners admits the ListenerSet's
// namespace (by default none is admitted), and the challenge HTTPRoute certmesh adds
// for http-01 is routed only by a listener whose allowedRoutes admits the route's
// namespace and kind (by default: the listener's own namespace, HTTPRoute on HTTP).
// certmesh applies the same rules before it orders, so that a certificate is not
// issued for listeners the Gateway will not serve, and an http-01 order is not
// started through a listener that will ignore its route. The Gateway implementation
// remains the judge; this only refuses early and says why.

// plainListener is a listener the ACME CA's plain-HTTP request may arrive through.
// owner names the object it belongs to, for messages; ns is the namespace that
// allowedRoutes' "Same" means for it (its Gateway's, or its ListenerSet's).
type plainListener struct {
	gatewayv1.Listener
	owner string
	ns    string
}

func plainListeners(kind Kind, ns, name string, listeners []gatewayv1.Listener) []plainListener {
	out := make([]plainListener, 0, len(listeners))
	for _, l := range listeners {
		out = append(out, plainListener{Listener: l, owner: fmt.Sprintf("%s %s/%s", kind, ns, name), ns: ns})
	}
	return out
}

// admitsListenerSet applies gw's spec.allowedListeners to a ListenerSet in namespace
// ns, whose labels are nsLabels; the reason says which rule refused.
func admitsListenerSet(gw *gatewayv1.Gateway, ns string, nsLabels map[string]string) (bool, string) {
	var rule *gatewayv1.ListenerNamespaces
	if gw.Spec.AllowedListeners != nil {
		rule = gw.Spec.AllowedListeners.Namespaces
	}
	if rule == nil {
		return false, "spec.allowedListeners is unset, which admits no ListenerSet"
	}
	ok, why := admitsNamespace(rule.From, rule.Selector, gatewayv1.NamespacesFromNone, gw.Namespace, ns, nsLabels)
	return ok, "spec.allowedListeners.namespaces " + why
}

// admitsHTTPRoute applies a listener's allowedRoutes to an HTTPRoute in namespace ns.
func admitsHTTPRoute(l plainListener, ns string, nsLabels map[string]string) (bool, string) {
	var rule gatewayv1.AllowedRoutes
	if l.AllowedRoutes != nil {
		rule = *l.AllowedRoutes
	}
	if len(rule.Kinds) > 0 && !slices.ContainsFunc(rule.Kinds, isHTTPRouteKind) {
		return false, "allowedRoutes.kinds does not list HTTPRoute"
	}
	var from *gatewayv1.FromNamespaces
	var selector *metav1.LabelSelector
	if rule.Namespaces != nil {
		from, selector = rule.Namespaces.From, rule.Namespaces.Selector
	}
	ok, why := admitsNamespace(from, selector, gatewayv1.NamespacesFromSame, l.ns, ns, nsLabels)
	return ok, "allowedRoutes.namespaces " + why
}

func isHTTPRouteKind(k gatewayv1.RouteGroupKind) bool {
	return k.Kind == "HTTPRoute" && (k.Group == nil || *k.Group == gatewayv1.GroupName)
}

// admitsNamespace is the Gateway API's namespace rule (from, with def when unset):
// whether it admits namespace ns, where "Same" means owner and a selector matches
// ns's labels. The reason (after "admits"/"refuses") names the rule either way.
func admitsNamespace(from *gatewayv1.FromNamespaces, selector *metav1.LabelSelector, def gatewayv1.FromNamespaces, owner, ns string, nsLabels map[string]string) (bool, string) {
	rule := def
	if from != nil && *from != "" {
		rule = *from
	}
	switch rule {
	case gatewayv1.NamespacesFromAll:
		return true, "from: All"
	case gatewayv1.NamespacesFromSame:
		if ns == owner {
			return true, "from: Same"
		}
		return false, fmt.Sprintf("from: Same admits only namespace %s, not %s", owner, ns)
	case gatewayv1.NamespacesFromNone:
		return false, "from: None admits no namespace"
	case gatewayv1.NamespacesFromSelector:
		if selector == nil {
			return false, "from: Selector has no selector"
		}
		sel, err := metav1.LabelSelectorAsSelector(selector)
		if err != nil {
			return false, fmt.Sprintf("from: Selector has an invalid selector: %v", err)
		}
		if sel.Matches(labels.Set(nsLabels)) {
			return true, "from: Selector (" + sel.String() + ")"
		}
		return false, fmt.Sprintf("from: Selector (%s) does not match namespace %s", sel.String(), ns)
	}
	return false, fmt.Sprintf("from: %q is not a value certmesh knows", rule)
}

// usesNamespaceSelector says whether deciding attachment for gw (and, when set, a
// ListenerSet ls attached to it) needs the labels of the attaching namespace: only
// a from: Selector rule does, so the controller reads a Namespace only then.
func usesNamespaceSelector(gw *gatewayv1.Gateway, ls *gatewayv1.ListenerSet) bool {
	isSelector := func(from *gatewayv1.FromNamespaces) bool {
		return from != nil && *from == gatewayv1.NamespacesFromSelector
	}
	routes := func(r *gatewayv1.AllowedRoutes) bool {
		return r != nil && r.Namespaces != nil && isSelector(r.Namespaces.From)
	}
	if gw != nil {
		if al := gw.Spec.AllowedListeners; ls != nil && al != nil && al.Namespaces != nil && isSelector(al.Namespaces.From) {
			return true
		}
		if slices.ContainsFunc(gw.Spec.Listeners, func(l gatewayv1.Listener) bool { return routes(l.AllowedRoutes) }) {
			return true
		}
	}
	return ls != nil && slices.ContainsFunc(ls.Spec.Listeners, func(l gatewayv1.ListenerEntry) bool { return routes(l.AllowedRoutes) })
}

// routeFor finds, among plain, a plain-HTTP listener that accepts host and admits
// an HTTPRoute from namespace ns. When none does, problem says why: no listener
// accepts the host, or those that do refuse the route (and by which rule).
func routeFor(plain []plainListener, host, ns string, nsLabels map[string]string) (problem string) {
	var refusals []string
	for _, l := range plain {
		if !acceptsHost(l.Listener, host) {
			continue
		}
		ok, why := admitsHTTPRoute(l, ns, nsLabels)
		if ok {
			return ""
		}
		refusals = append(refusals, fmt.Sprintf("listener %q of %s: %s", l.Name, l.owner, why))
	}
	if len(refusals) == 0 {
		return "no HTTP listener accepts the host"
	}
	return fmt.Sprintf("no HTTP listener that accepts the host admits certmesh's challenge HTTPRoute from namespace %s (%s)", ns, strings.Join(refusals, "; "))
}
