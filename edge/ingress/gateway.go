package ingress

import (
	"context"
	"fmt"
	"slices"
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

// gatewayWatch is the Gateway side of the controller. The Gateway API is a set of
// CRDs a cluster may not have, so the informer starts only once discovery serves
// them; until then lister is nil and Gateway keys resolve to nothing.
type gatewayWatch struct {
	mu    sync.Mutex
	lst   gatewaylisters.GatewayLister
	cache cache.Store
}

func (w *gatewayWatch) lister() gatewaylisters.GatewayLister {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lst
}

func (w *gatewayWatch) store() cache.Store {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cache
}

// runGateways waits until the Gateway API is served, then watches Gateways until ctx
// ends. Each Gateway's events enqueue its Key like an Ingress's.
func (c *Controller) runGateways(ctx context.Context) {
	for attempt := 0; ; attempt++ {
		served, err := gatewayAPIServed(c.cfg.Client.Discovery())
		if served {
			break
		}
		if attempt == 0 {
			c.cfg.Logger.Info("ingress: Gateway API not served; watching Ingresses only, checking again periodically",
				"group_version", gatewayAPIGroupVersion, "every", c.cfg.GatewayAPIPoll, "err", err)
		}
		if !sleep(ctx, c.cfg.Clock, c.cfg.GatewayAPIPoll) {
			return
		}
	}
	factory := gatewayinformers.NewSharedInformerFactoryWithOptions(c.cfg.Gateways, c.cfg.Resync,
		gatewayinformers.WithNamespace(c.cfg.IngressNamespace))
	defer factory.Shutdown()
	gws := factory.Gateway().V1().Gateways()
	if _, err := gws.Informer().AddEventHandler(c.enqueuer(KindGateway)); err != nil {
		c.cfg.Logger.Error("ingress: watch gateways", "err", err)
		return
	}
	// The lister is published before the informer starts: its event handlers run
	// after the object is in the cache, so every enqueued Key resolves.
	c.gateways.mu.Lock()
	c.gateways.lst, c.gateways.cache = gws.Lister(), gws.Informer().GetStore()
	c.gateways.mu.Unlock()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), gws.Informer().HasSynced) {
		return
	}
	c.cfg.Logger.Info("ingress: Gateway API served; watching Gateways", "group_version", gatewayAPIGroupVersion)
	<-ctx.Done()
}

// gatewayAPIServed says whether the apiserver serves Gateways (their CRD is installed
// and established).
func gatewayAPIServed(d discovery.DiscoveryInterface) (bool, error) {
	list, err := d.ServerResourcesForGroupVersion(gatewayAPIGroupVersion)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, r := range list.APIResources {
		if r.Name == "gateways" {
			return true, nil
		}
	}
	return false, nil
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
		annotations: gw.Annotations,
		desired: func(issuerName string, iss Issuer) []Desired {
			return GatewayCertificates(gw, issuerName, iss)
		},
		route: func(b *solverBackend) edge.HTTP01Router { return newGatewayRoute(b, gw) },
	}
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
//   - with http-01, a hostname no plain-HTTP listener of the Gateway accepts: the
//     ACME CA's request would have nowhere to arrive.
//
// Passthrough listeners are skipped silently: the backend terminates TLS, so its
// certificate is not the Gateway's.
func GatewayCertificates(gw *gatewayv1.Gateway, issuerName string, iss Issuer) []Desired {
	var out []Desired
	index := map[string]int{}
	for _, l := range gw.Spec.Listeners {
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
		if iss.Solver.Type == edge.HTTP01 && !servesHTTP(gw, host) {
			out = append(out, Desired{Problem: fmt.Sprintf("%s (%s): no HTTP listener of this Gateway accepts the host, so an http-01 challenge cannot reach it; add one on port 80 or use a dns-01 issuer", where, host)})
			continue
		}
		for i, ref := range l.TLS.CertificateRefs {
			if problem := secretRefProblem(gw.Namespace, ref); problem != "" {
				out = append(out, Desired{Problem: fmt.Sprintf("%s tls.certificateRefs[%d]: %s", where, i, problem)})
				continue
			}
			name := CertificateName(gw.Namespace, string(ref.Name))
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

func secretRefProblem(gatewayNS string, ref gatewayv1.SecretObjectReference) string {
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
	if ref.Namespace != nil && string(*ref.Namespace) != "" && string(*ref.Namespace) != gatewayNS {
		return fmt.Sprintf("Secret %s/%s is in another namespace; certmesh writes a Gateway's certificates only into the Gateway's namespace", *ref.Namespace, ref.Name)
	}
	return ""
}

// servesHTTP says whether a plain-HTTP listener of gw accepts host: one without a
// hostname, with exactly host, or with a wildcard covering it.
func servesHTTP(gw *gatewayv1.Gateway, host string) bool {
	return slices.ContainsFunc(gw.Spec.Listeners, func(l gatewayv1.Listener) bool {
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
	})
}
