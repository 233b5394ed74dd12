package ingress

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	"github.com/certmesh/certmesh/edge"
)

// gatewayAPIGroupVersion is the Gateway API version certmesh reads (GA since v1.0).
const gatewayAPIGroupVersion = "gateway.networking.k8s.io/v1"

// Gateway API resources the controller reads, as discovery names them.
const (
	resourceGateways     = "gateways"
	resourceListenerSets = "listenersets"
)

// gatewayWatch is the Gateway API side of the controller. The Gateway API is a set
// of CRDs a cluster may not have, and ListenerSets arrived later than Gateways, so
// each informer starts only once discovery serves its resource; until then its
// lister is nil and its Keys resolve to nothing.
type gatewayWatch struct {
	mu           sync.Mutex
	gateways     gatewaylisters.GatewayLister
	gatewayStore cache.Store
	sets         gatewaylisters.ListenerSetLister
	setStore     cache.Store
}

func (w *gatewayWatch) lister() gatewaylisters.GatewayLister {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gateways
}

func (w *gatewayWatch) store() cache.Store {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gatewayStore
}

func (w *gatewayWatch) listenerSets() (gatewaylisters.ListenerSetLister, cache.Store) {
	if w == nil {
		return nil, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sets, w.setStore
}

// runGateways starts the Gateway and ListenerSet informers as discovery comes to
// serve them (asking every GatewayAPIPoll), and runs them until ctx ends. Every
// event enqueues the object's Key; a Gateway's also enqueues the ListenerSets
// attached to it, whose http-01 routing depends on its listeners.
func (c *Controller) runGateways(ctx context.Context) {
	factory := gatewayinformers.NewSharedInformerFactoryWithOptions(c.cfg.Gateways, c.cfg.Resync,
		gatewayinformers.WithNamespace(c.cfg.IngressNamespace))
	defer factory.Shutdown()
	var haveGateways, haveSets bool
	for attempt := 0; ; attempt++ {
		served, err := gatewayAPIServed(c.cfg.Client.Discovery())
		if served[resourceGateways] && !haveGateways {
			if haveGateways = c.startGatewayInformer(ctx, factory); !haveGateways {
				return
			}
		}
		if served[resourceListenerSets] && !haveSets {
			if haveSets = c.startListenerSetInformer(ctx, factory); !haveSets {
				return
			}
		}
		if haveGateways && haveSets {
			<-ctx.Done()
			return
		}
		if attempt == 0 && !haveGateways {
			c.cfg.Logger.Info("ingress: Gateway API not served; watching Ingresses only, checking again periodically",
				"group_version", gatewayAPIGroupVersion, "every", c.cfg.GatewayAPIPoll, "err", err)
		}
		if !sleep(ctx, c.cfg.Clock, c.cfg.GatewayAPIPoll) {
			return
		}
	}
}

// startGatewayInformer starts the Gateway informer and waits for its cache; false
// when ctx ended first or the handler could not be added.
func (c *Controller) startGatewayInformer(ctx context.Context, factory gatewayinformers.SharedInformerFactory) bool {
	gws := factory.Gateway().V1().Gateways()
	enqueue := c.enqueuer(KindGateway)
	attached := func(obj any) {
		if ref, err := cache.DeletionHandlingObjectToName(obj); err == nil {
			c.enqueueListenerSetsOf(ref.Namespace, ref.Name)
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { enqueue.OnAdd(obj, false); attached(obj) },
		UpdateFunc: func(old, obj any) { enqueue.OnUpdate(old, obj); attached(obj) },
		DeleteFunc: func(obj any) { enqueue.OnDelete(obj); attached(obj) },
	}
	return c.startInformer(ctx, factory, "Gateways", gws.Informer(), handler, func() {
		c.gateways.gateways, c.gateways.gatewayStore = gws.Lister(), gws.Informer().GetStore()
	})
}

func (c *Controller) startListenerSetInformer(ctx context.Context, factory gatewayinformers.SharedInformerFactory) bool {
	sets := factory.Gateway().V1().ListenerSets()
	return c.startInformer(ctx, factory, "ListenerSets", sets.Informer(), c.enqueuer(KindListenerSet), func() {
		c.gateways.sets, c.gateways.setStore = sets.Lister(), sets.Informer().GetStore()
	})
}

// startInformer adds handler, publishes the lister (under the watch's lock),
// starts the factory's new informers and waits for inf's cache. The lister is
// published before the informer starts: its event handlers run after the object
// is in the cache, so every enqueued Key resolves.
func (c *Controller) startInformer(ctx context.Context, factory gatewayinformers.SharedInformerFactory, what string,
	inf cache.SharedIndexInformer, handler cache.ResourceEventHandler, publish func()) bool {
	if _, err := inf.AddEventHandler(handler); err != nil {
		c.cfg.Logger.Error("ingress: watch "+what, "err", err)
		return false
	}
	c.gateways.mu.Lock()
	publish()
	c.gateways.mu.Unlock()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return false
	}
	c.cfg.Logger.Info("ingress: Gateway API served; watching "+what, "group_version", gatewayAPIGroupVersion)
	return true
}

// enqueueListenerSetsOf enqueues the ListenerSets whose parent is the Gateway ns/name.
func (c *Controller) enqueueListenerSetsOf(ns, name string) {
	_, store := c.gateways.listenerSets()
	if store == nil {
		return
	}
	for _, obj := range store.List() {
		if ls, ok := obj.(*gatewayv1.ListenerSet); ok {
			if pns, pname, isGateway := parentGateway(ls); isGateway && pns == ns && pname == name {
				c.queue.Add(ListenerSetKey(ls.Namespace, ls.Name))
			}
		}
	}
}

// gatewayAPIServed says which Gateway API resources the apiserver serves (their CRDs
// are installed and established). A group it does not serve at all is no error.
func gatewayAPIServed(d discovery.DiscoveryInterface) (map[string]bool, error) {
	list, err := d.ServerResourcesForGroupVersion(gatewayAPIGroupVersion)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	served := map[string]bool{}
	for _, r := range list.APIResources {
		served[r.Name] = true
	}
	return served, nil
}

// sleep waits d on clk; false when ctx ended first.
func sleep(ctx context.Context, clk clock.WithTicker, d time.Duration) bool {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// gatewaySource is a Gateway as ProcessItem sees it.
func gatewaySource(gw *gatewayv1.Gateway) source {
	return source{
		key: GatewayKey(gw.Namespace, gw.Name), uid: gw.UID, version: gw.ResourceVersion,
		annotations: gw.Annotations, selectsNamespace: usesNamespaceSelector(gw, nil),
		desired: func(nsLabels map[string]string, issuerName string, iss Issuer) []Desired {
			return GatewayCertificates(gw, nsLabels, issuerName, iss)
		},
		route: func(b *solverBackend) edge.HTTP01Router { return newGatewayRoute(b, gw) },
	}
}

// listenerSetSource is a ListenerSet as ProcessItem sees it; parent is its Gateway,
// nil when not found.
func listenerSetSource(ls *gatewayv1.ListenerSet, parent *gatewayv1.Gateway) source {
	pns, pname, _ := parentGateway(ls)
	return source{
		key: ListenerSetKey(ls.Namespace, ls.Name), uid: ls.UID, version: ls.ResourceVersion,
		annotations: ls.Annotations, selectsNamespace: usesNamespaceSelector(parent, ls),
		desired: func(nsLabels map[string]string, issuerName string, iss Issuer) []Desired {
			return ListenerSetCertificates(ls, parent, nsLabels, issuerName, iss)
		},
		route: func(b *solverBackend) edge.HTTP01Router { return newListenerSetRoute(b, ls, pns, pname) },
	}
}

// parentGateway is the namespace and name of a ListenerSet's parent, and whether it
// is a Gateway (the only parent kind the API defines today).
func parentGateway(ls *gatewayv1.ListenerSet) (ns, name string, isGateway bool) {
	ref := ls.Spec.ParentRef
	ns = ls.Namespace
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	isGateway = (ref.Kind == nil || *ref.Kind == "Gateway") && (ref.Group == nil || *ref.Group == gatewayv1.GroupName)
	return ns, string(ref.Name), isGateway
}

// GatewayCertificates is the Gateway policy, cert-manager's gateway-shim's rules:
// every listener that terminates TLS (protocol HTTPS, or TLS in mode Terminate) and
// has a hostname asks, for that hostname, for a certificate in each Secret its
// tls.certificateRefs name. Listeners naming the same Secret are merged (one
// certificate for all their hostnames). Refused, with the reason as an Event:
//   - a TLS listener without a hostname (which names would the certificate hold?);
//   - a reference to anything but a core Secret, or to a Secret in another namespace
//     (certmesh writes a Gateway's certificates only beside it: a ReferenceGrant lets
//     a Gateway read there, not certmesh write there);
//   - a wildcard hostname with a solver other than dns-01;
//   - with http-01, a hostname no plain-HTTP listener of the Gateway both accepts and
//     opens to certmesh's challenge HTTPRoute (allowedRoutes, see attach.go): the
//     ACME CA's request would have nowhere to arrive.
//
// Passthrough listeners are skipped silently: the backend terminates TLS, so its
// certificate is not the Gateway's. nsLabels are the labels of the Gateway's
// namespace, needed only when an allowedRoutes rule selects namespaces by label.
func GatewayCertificates(gw *gatewayv1.Gateway, nsLabels map[string]string, issuerName string, iss Issuer) []Desired {
	plain := plainListeners(KindGateway, gw.Namespace, gw.Name, gw.Spec.Listeners)
	return listenerCertificates(gw.Namespace, nsLabels, gw.Spec.Listeners, plain, "", issuerName, iss)
}

// ListenerSetCertificates applies the Gateway rules to a ListenerSet's listeners. Its
// certificates live in its own namespace; for http-01, the plain-HTTP listener may be
// its own or its parent Gateway's (parent is nil when that Gateway is not found).
// A ListenerSet its parent does not admit (spec.allowedListeners) gets nothing, only
// the reason. nsLabels are the labels of the ListenerSet's namespace, needed only
// when an attachment rule selects namespaces by label.
func ListenerSetCertificates(ls *gatewayv1.ListenerSet, parent *gatewayv1.Gateway, nsLabels map[string]string, issuerName string, iss Issuer) []Desired {
	pns, pname, _ := parentGateway(ls)
	own := make([]gatewayv1.Listener, 0, len(ls.Spec.Listeners))
	for _, e := range ls.Spec.Listeners {
		own = append(own, gatewayv1.Listener(e)) // the same fields, so a ListenerSet's listener is a Gateway's
	}
	plain, missing := plainListeners(KindListenerSet, ls.Namespace, ls.Name, own), ""
	if parent != nil {
		if ok, why := admitsListenerSet(parent, ls.Namespace, nsLabels); !ok {
			return []Desired{{Problem: fmt.Sprintf("its parent Gateway %s/%s does not admit it: %s", pns, pname, why)}}
		}
		plain = append(plain, plainListeners(KindGateway, parent.Namespace, parent.Name, parent.Spec.Listeners)...)
	} else {
		missing = fmt.Sprintf(" (its parent Gateway %s/%s is not found)", pns, pname)
	}
	return listenerCertificates(ls.Namespace, nsLabels, own, plain, missing, issuerName, iss)
}

// listenerCertificates is the policy over listeners in namespace ns (whose labels
// are nsLabels); plain are the listeners an http-01 request may arrive through, and
// noPlainHint is added to the problem when none accepts the host.
func listenerCertificates(ns string, nsLabels map[string]string, listeners []gatewayv1.Listener, plain []plainListener, noPlainHint, issuerName string, iss Issuer) []Desired {
	var out []Desired
	index := map[string]int{}
	for _, l := range listeners {
		if !terminatesTLS(l) {
			continue
		}
		where := fmt.Sprintf("listener %q", l.Name)
		if l.Hostname == nil || *l.Hostname == "" {
			out = append(out, Desired{Problem: where + " has no hostname, so certmesh cannot tell which names its certificate needs"})
			continue
		}
		if len(l.TLS.CertificateRefs) == 0 {
			out = append(out, Desired{Problem: where + " names no tls.certificateRefs"})
			continue
		}
		host := normalizeHosts([]string{string(*l.Hostname)})[0]
		if iss.Solver.Type != edge.DNS01 && isWildcard(host) {
			out = append(out, Desired{Problem: fmt.Sprintf("%s (%s): wildcard hosts need a dns-01 issuer", where, host)})
			continue
		}
		if iss.Solver.Type == edge.HTTP01 {
			if problem := routeFor(plain, host, ns, nsLabels); problem != "" {
				out = append(out, Desired{Problem: fmt.Sprintf("%s (%s): %s%s, so an http-01 challenge cannot reach it; add or open one on port 80, or use a dns-01 issuer", where, host, problem, noPlainHint)})
				continue
			}
		}
		for i, ref := range l.TLS.CertificateRefs {
			if problem := secretRefProblem(ns, ref); problem != "" {
				out = append(out, Desired{Problem: fmt.Sprintf("%s tls.certificateRefs[%d]: %s", where, i, problem)})
				continue
			}
			name := CertificateName(ns, string(ref.Name))
			if j, ok := index[name]; ok {
				out[j].Spec.DNSNames = normalizeHosts(append(out[j].Spec.DNSNames, host))
				continue
			}
			index[name] = len(out)
			out = append(out, Desired{Spec: edge.CertificateSpec{
				Name: name, DNSNames: []string{host}, Issuer: issuerName, Solver: iss.Solver,
			}})
		}
	}
	return out
}

// terminatesTLS: protocol HTTPS or TLS with tls set and a mode other than Passthrough
// (Terminate is the default).
func terminatesTLS(l gatewayv1.Listener) bool {
	if l.TLS == nil || (l.Protocol != gatewayv1.HTTPSProtocolType && l.Protocol != gatewayv1.TLSProtocolType) {
		return false
	}
	return l.TLS.Mode == nil || *l.TLS.Mode != gatewayv1.TLSModePassthrough
}

func secretRefProblem(ns string, ref gatewayv1.SecretObjectReference) string {
	if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Secret") {
		group, kind := "", "Secret"
		if ref.Group != nil {
			group = string(*ref.Group)
		}
		if ref.Kind != nil {
			kind = string(*ref.Kind)
		}
		return fmt.Sprintf("%s %q is not a core Secret; certmesh writes only kubernetes.io/tls Secrets", strings.TrimPrefix(group+"/"+kind, "/"), ref.Name)
	}
	if ref.Namespace != nil && string(*ref.Namespace) != "" && string(*ref.Namespace) != ns {
		return fmt.Sprintf("Secret %s/%s is in another namespace; certmesh writes a listener's certificates only into its Gateway's (or ListenerSet's) namespace", *ref.Namespace, ref.Name)
	}
	return ""
}

// acceptsHost says whether l is a plain-HTTP listener that accepts host: one
// without a hostname, with exactly host, or with a wildcard covering it.
func acceptsHost(l gatewayv1.Listener, host string) bool {
	if l.Protocol != gatewayv1.HTTPProtocolType {
		return false
	}
	if l.Hostname == nil || *l.Hostname == "" {
		return true
	}
	h := strings.ToLower(string(*l.Hostname))
	if suffix, ok := strings.CutPrefix(h, "*"); ok {
		return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	}
	return h == host
}
