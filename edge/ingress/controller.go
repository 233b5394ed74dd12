// Package ingress obtains ACME certificates for the objects that expose a cluster's
// hosts — networking.k8s.io Ingresses, and Gateway API Gateways when their CRD is
// served — and keeps them in the kubernetes.io/tls Secrets those objects name, in
// cert-manager's shape: informers are synced before any work, every change enqueues
// the object's Key, and an idempotent ProcessItem gathers inputs, applies pure policy
// (IssuerName, DesiredCertificates, GatewayCertificates) and hands the result to an
// edge.Manager, whose loops order, renew and store through the Secret store.
//
// It must run on one replica at a time (the leader): Run is a func(ctx) error that a
// leader-election runner starts when this replica leads and cancels when it stops.
// Two leaders for a moment cannot order twice in one process, and across processes the
// Secret write is guarded by resourceVersion; the ACME CA still sees two orders then.
package ingress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/certmesh/certmesh/edge"
	"github.com/certmesh/certmesh/edge/secretstore"
)

// Config configures a Controller.
type Config struct {
	Client kubernetes.Interface
	// Namespace is certmesh's own: the issuers ConfigMap, credential Secrets and ACME
	// account Secrets live there.
	Namespace string
	// IngressNamespace limits the controller to the Ingresses, Gateways (and Secrets)
	// of one namespace, as cert-manager's --namespace does (default: all namespaces).
	IngressNamespace string
	// Gateways, when set, makes the controller watch Gateway API Gateways and
	// ListenerSets too. The CRDs are optional: until discovery serves
	// gateway.networking.k8s.io/v1 gateways (and listenersets), the controller asks
	// again every GatewayAPIPoll (default 1m), so installing the Gateway API after
	// certmesh needs no restart.
	Gateways       gatewayclient.Interface
	GatewayAPIPoll time.Duration
	// Edge is the base of the edge.Manager's configuration: HTTP01Addr (the solver
	// listener), HTTPClient, Backoff, DNSProviders, Rand... Store, Observer, Issuers
	// and Certificates are the controller's and must be left empty.
	Edge edge.Config
	// SolverPodIP is this pod's IP (downward API status.podIP): the temporary
	// challenge Service sends the ACME CA's requests there.
	SolverPodIP string
	// SelfCheck, when set, is the client that fetches each challenge through the
	// ingress before the CA is asked to validate it (see selfCheck); its transport
	// decides where "http://<host>" goes (the default: the cluster's DNS). Checks are
	// retried every second for up to SelfCheckTimeout (default 2m).
	SelfCheck        *http.Client
	SelfCheckTimeout time.Duration
	// Workers is the number of keys processed at once (default 2).
	Workers int
	// Resync re-examines every Ingress this often (default 10m).
	Resync time.Duration
	// ReportingInstance names this replica in Events (default "certmesh").
	ReportingInstance string
	Clock             clock.WithTicker
	Logger            *slog.Logger
}

// Controller keeps a certificate in the Secret of every spec.tls entry of every
// annotated Ingress, and of every TLS listener of every annotated Gateway or
// ListenerSet.
type Controller struct {
	cfg       Config
	mgr       *edge.Manager
	store     *secretstore.Store
	backend   *solverBackend
	informer  informers.SharedInformerFactory // Ingresses, all namespaces
	secrets   informers.SharedInformerFactory // certmesh-managed Secrets, all namespaces
	config    informers.SharedInformerFactory // the issuers ConfigMap only
	ingLister networkinglisters.IngressLister
	recorder  record.EventRecorder // set by start
	gateways  *gatewayWatch        // nil without Config.Gateways
	queue     workqueue.TypedRateLimitingInterface[Key]

	mu     sync.Mutex
	owners map[string]Key   // certificate name → the object asking for it
	owned  map[Key][]string // object → certificate names
}

// New validates cfg and builds the Controller and its edge.Manager; it starts nothing.
func New(cfg Config) (*Controller, error) {
	if cfg.Client == nil || cfg.Namespace == "" {
		return nil, errors.New("ingress: Client and Namespace are required")
	}
	if cfg.Edge.Store != nil || cfg.Edge.Observer != nil || len(cfg.Edge.Certificates) > 0 || len(cfg.Edge.Issuers) > 0 {
		return nil, fmt.Errorf("%w: Edge.Store, Observer, Issuers and Certificates belong to the controller", edge.ErrInvalidConfig)
	}
	cfg = cfg.withDefaults()
	store, err := secretstore.New(secretstore.Config{Client: cfg.Client, Namespace: cfg.Namespace})
	if err != nil {
		return nil, err
	}
	c := &Controller{
		cfg: cfg, store: store, owners: map[string]Key{}, owned: map[Key][]string{},
		backend: &solverBackend{client: cfg.Client, gateways: cfg.Gateways, podIP: cfg.SolverPodIP, port: solverPort(cfg.Edge.HTTP01Addr)},
	}
	if cfg.Gateways != nil {
		c.gateways = &gatewayWatch{}
	}
	if cfg.SelfCheck != nil {
		c.backend.check = &selfCheck{client: cfg.SelfCheck, clock: cfg.Clock, interval: time.Second, timeout: cfg.SelfCheckTimeout}
	}
	ecfg := cfg.Edge
	ecfg.Store, ecfg.Observer = store, observer{c}
	if ecfg.Clock == nil {
		ecfg.Clock = cfg.Clock
	}
	if ecfg.Logger == nil {
		ecfg.Logger = cfg.Logger
	}
	if c.mgr, err = edge.New(ecfg); err != nil {
		return nil, err
	}
	c.informer = informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.Resync,
		informers.WithNamespace(cfg.IngressNamespace))
	c.secrets = informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.Resync,
		informers.WithNamespace(cfg.IngressNamespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = secretstore.LabelManagedBy + "=" + secretstore.ManagedBy
		}))
	c.config = informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.Resync,
		informers.WithNamespace(cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "metadata.name=" + IssuersConfigMap
		}))
	return c, nil
}

func (cfg Config) withDefaults() Config {
	if cfg.SelfCheckTimeout <= 0 {
		cfg.SelfCheckTimeout = 2 * time.Minute
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.GatewayAPIPoll <= 0 {
		cfg.GatewayAPIPoll = time.Minute
	}
	if cfg.ReportingInstance == "" {
		cfg.ReportingInstance = "certmesh"
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

func solverPort(addr string) int32 {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(port, 10, 32)
	return int32(n)
}

// Manager is the edge.Manager holding the Ingress certificates, for the SDS side
// (Lookup, Changed) and for mounting HTTP01Handler elsewhere.
func (c *Controller) Manager() *edge.Manager { return c.mgr }

// Run watches Ingresses (and Gateways), their Secrets and the issuers ConfigMap, and
// keeps the certificates until ctx ends. It is meant to run on the leader only. It returns
// early with the Manager's error when the HTTP-01 solver cannot listen.
func (c *Controller) Run(ctx context.Context) error {
	stop, err := c.start(ctx)
	defer stop()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mgrErr error
	mgrDone := make(chan struct{})
	go func() {
		defer close(mgrDone)
		mgrErr = c.mgr.Run(ctx)
		cancel()
	}()
	var wg sync.WaitGroup
	for range c.cfg.Workers {
		wg.Go(func() { c.work(ctx) })
	}
	if c.gateways != nil {
		wg.Go(func() { c.runGateways(ctx) })
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	<-mgrDone
	return mgrErr
}

// start makes the queue, starts the informers and waits for their caches; the
// returned func stops them (call it even on error).
func (c *Controller) start(ctx context.Context) (func(), error) {
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[Key](),
		workqueue.TypedRateLimitingQueueConfig[Key]{Name: "certmesh-ingress", Clock: c.cfg.Clock})
	factories := []informers.SharedInformerFactory{c.informer, c.secrets, c.config}
	stopCh := make(chan struct{})
	stopEvents := c.startEvents()
	stop := func() {
		c.queue.ShutDown()
		close(stopCh)
		for _, f := range factories {
			f.Shutdown()
		}
		stopEvents()
	}
	if err := c.watch(); err != nil {
		return stop, err
	}
	for _, f := range factories {
		f.Start(stopCh)
	}
	if !cache.WaitForCacheSync(ctx.Done(), c.synced()...) {
		return stop, fmt.Errorf("ingress: caches not synced: %w", ctx.Err())
	}
	return stop, nil
}

func (c *Controller) work(ctx context.Context) {
	for {
		key, quit := c.queue.Get()
		if quit {
			return
		}
		if err := c.ProcessItem(ctx, key); err != nil && ctx.Err() == nil {
			c.cfg.Logger.Warn("ingress: process", "object", key.String(), "err", err)
			c.queue.AddRateLimited(key)
		} else {
			c.queue.Forget(key)
		}
		c.queue.Done(key)
	}
}

func (c *Controller) synced() []cache.InformerSynced {
	return []cache.InformerSynced{
		c.informer.Networking().V1().Ingresses().Informer().HasSynced,
		c.secrets.Core().V1().Secrets().Informer().HasSynced,
		c.config.Core().V1().ConfigMaps().Informer().HasSynced,
	}
}

// ProcessItem brings the certificates of one object in line with it. It is
// idempotent: running it twice changes nothing the second time.
func (c *Controller) ProcessItem(ctx context.Context, key Key) error {
	src, found, err := c.lookup(key)
	if err != nil {
		return err
	}
	if !found {
		c.release(key, nil)
		return nil
	}
	issuerName, ok := IssuerName(src.annotations)
	if !ok {
		c.release(key, nil)
		return nil
	}
	issuers, err := c.issuers(ctx)
	if err != nil {
		c.event(src.reference(), eventWarning, ReasonBadIssuer, err.Error())
		return err
	}
	iss, ok := issuers[issuerName]
	if !ok {
		c.event(src.reference(), eventWarning, ReasonBadIssuer, fmt.Sprintf("issuer %q is not in ConfigMap %s/%s", issuerName, c.cfg.Namespace, IssuersConfigMap))
		return nil // the ConfigMap's next change re-enqueues every object
	}
	if err := c.mgr.EnsureIssuer(issuerName, iss.ACME); err != nil {
		c.event(src.reference(), eventWarning, ReasonBadIssuer, err.Error())
		return nil
	}
	return c.apply(ctx, src, issuerName, iss)
}

// lookup reads the object of key from its informer's cache; found is false when it
// is gone (or its kind is not watched).
func (c *Controller) lookup(key Key) (src source, found bool, err error) {
	switch key.Kind {
	case KindIngress:
		ing, err := c.ingLister.Ingresses(key.Namespace).Get(key.Name)
		if apierrors.IsNotFound(err) {
			return source{}, false, nil
		}
		if err != nil {
			return source{}, false, fmt.Errorf("ingress: get %s: %w", key, err)
		}
		return ingressSource(ing), true, nil
	case KindGateway:
		lister := c.gateways.lister()
		if lister == nil {
			return source{}, false, nil
		}
		gw, err := lister.Gateways(key.Namespace).Get(key.Name)
		if apierrors.IsNotFound(err) {
			return source{}, false, nil
		}
		if err != nil {
			return source{}, false, fmt.Errorf("ingress: get %s: %w", key, err)
		}
		return gatewaySource(gw), true, nil
	case KindListenerSet:
		lister, _ := c.gateways.listenerSets()
		if lister == nil {
			return source{}, false, nil
		}
		ls, err := lister.ListenerSets(key.Namespace).Get(key.Name)
		if apierrors.IsNotFound(err) {
			return source{}, false, nil
		}
		if err != nil {
			return source{}, false, fmt.Errorf("ingress: get %s: %w", key, err)
		}
		var parent *gatewayv1.Gateway
		if ns, name, isGateway := parentGateway(ls); isGateway {
			if gws := c.gateways.lister(); gws != nil {
				parent, _ = gws.Gateways(ns).Get(name) // nil when not found (or outside IngressNamespace)
			}
		}
		return listenerSetSource(ls, parent), true, nil
	}
	return source{}, false, nil
}

// apply ensures the desired certificates of src and drops the ones it no longer asks for.
func (c *Controller) apply(ctx context.Context, src source, issuerName string, iss Issuer) error {
	if iss.Solver.Type == edge.HTTP01 {
		iss.Solver.HTTP01Router = src.route(c.backend)
	}
	var nsLabels map[string]string
	if src.selectsNamespace {
		// Read when needed only; a label change is seen at the object's next event
		// or resync.
		ns, err := c.cfg.Client.CoreV1().Namespaces().Get(ctx, src.key.Namespace, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("ingress: %s: read its namespace's labels for an attachment selector: %w", src.key, err)
		}
		nsLabels = ns.Labels
	}
	var keep []string
	var errs []error
	for _, d := range src.desired(nsLabels, issuerName, iss) {
		if d.Problem != "" {
			c.event(src.reference(), eventWarning, ReasonBadSpec, d.Problem)
			continue
		}
		if owner, taken := c.claim(src.key, d.Spec.Name); taken {
			c.event(src.reference(), eventWarning, ReasonConflict, fmt.Sprintf("secret %s is already managed for %s", d.Spec.Name, owner))
			continue
		}
		keep = append(keep, d.Spec.Name)
		if err := c.mgr.Ensure(d.Spec); err != nil {
			c.event(src.reference(), eventWarning, ReasonBadSpec, err.Error())
			errs = append(errs, err)
			continue
		}
		c.resyncIfMissing(d.Spec.Name)
	}
	c.release(src.key, keep)
	return errors.Join(errs...)
}

// resyncIfMissing wakes the certificate when its Secret is gone, so that the Manager
// writes it back (or orders it) now rather than at its next renewal.
func (c *Controller) resyncIfMissing(name string) {
	ns, secret := SplitCertificateName(name)
	if _, err := c.secrets.Core().V1().Secrets().Lister().Secrets(ns).Get(secret); apierrors.IsNotFound(err) {
		c.mgr.Resync(name)
	}
}

// claim records key as the owner of name unless another object owns it.
func (c *Controller) claim(key Key, name string) (Key, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if owner, ok := c.owners[name]; ok && owner != key {
		return owner, true
	}
	c.owners[name] = key
	return Key{}, false
}

// release drops the certificates key owned that are not in keep.
func (c *Controller) release(key Key, keep []string) {
	c.mu.Lock()
	var drop []string
	for _, name := range c.owned[key] {
		if !contains(keep, name) {
			drop = append(drop, name)
			delete(c.owners, name)
		}
	}
	if len(keep) == 0 {
		delete(c.owned, key)
	} else {
		c.owned[key] = keep
	}
	c.mu.Unlock()
	for _, name := range drop {
		c.mgr.Remove(name)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
