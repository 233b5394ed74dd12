// Package ingress obtains ACME certificates for Kubernetes Ingress objects and keeps
// them in the kubernetes.io/tls Secrets the Ingresses name, in cert-manager's shape:
// informers are synced before any work, every change enqueues the Ingress's key, and
// an idempotent ProcessItem gathers inputs, applies pure policy (IssuerName,
// DesiredCertificates) and hands the result to an edge.Manager, whose loops order,
// renew and store through the Secret store.
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

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/edge"
	"github.com/certmesh/certmesh/edge/secretstore"
)

// Config configures a Controller.
type Config struct {
	Client kubernetes.Interface
	// Namespace is certmesh's own: the issuers ConfigMap, credential Secrets and ACME
	// account Secrets live there.
	Namespace string
	// IngressNamespace limits the controller to the Ingresses (and Secrets) of one
	// namespace, as cert-manager's --namespace does (default: all namespaces).
	IngressNamespace string
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
// annotated Ingress.
type Controller struct {
	cfg       Config
	mgr       *edge.Manager
	store     *secretstore.Store
	backend   *solverBackend
	informer  informers.SharedInformerFactory // Ingresses, all namespaces
	secrets   informers.SharedInformerFactory // certmesh-managed Secrets, all namespaces
	config    informers.SharedInformerFactory // the issuers ConfigMap only
	ingLister networkinglisters.IngressLister
	queue     workqueue.TypedRateLimitingInterface[string]

	mu     sync.Mutex
	owners map[string]string   // certificate name → Ingress key
	owned  map[string][]string // Ingress key → certificate names
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
		cfg: cfg, store: store, owners: map[string]string{}, owned: map[string][]string{},
		backend: &solverBackend{client: cfg.Client, podIP: cfg.SolverPodIP, port: solverPort(cfg.Edge.HTTP01Addr)},
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

// Run watches Ingresses, their Secrets and the issuers ConfigMap, and keeps the
// certificates until ctx ends. It is meant to run on the leader only. It returns
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
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "certmesh-ingress", Clock: c.cfg.Clock})
	factories := []informers.SharedInformerFactory{c.informer, c.secrets, c.config}
	stopCh := make(chan struct{})
	stop := func() {
		c.queue.ShutDown()
		close(stopCh)
		for _, f := range factories {
			f.Shutdown()
		}
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
			c.cfg.Logger.Warn("ingress: process", "key", key, "err", err)
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

// ProcessItem brings the certificates of one Ingress ("namespace/name") in line with
// it. It is idempotent: running it twice changes nothing the second time.
func (c *Controller) ProcessItem(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // a malformed key never becomes valid
	}
	ing, err := c.ingLister.Ingresses(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.release(key, nil)
		return nil
	}
	if err != nil {
		return fmt.Errorf("ingress: get %s: %w", key, err)
	}
	issuerName, ok := IssuerName(ing.Annotations)
	if !ok {
		c.release(key, nil)
		return nil
	}
	issuers, err := c.issuers(ctx)
	if err != nil {
		c.event(ctx, ing, eventWarning, ReasonBadIssuer, err.Error())
		return err
	}
	iss, ok := issuers[issuerName]
	if !ok {
		c.event(ctx, ing, eventWarning, ReasonBadIssuer, fmt.Sprintf("issuer %q is not in ConfigMap %s/%s", issuerName, c.cfg.Namespace, IssuersConfigMap))
		return nil // the ConfigMap's next change re-enqueues every Ingress
	}
	if err := c.mgr.EnsureIssuer(issuerName, iss.ACME); err != nil {
		c.event(ctx, ing, eventWarning, ReasonBadIssuer, err.Error())
		return nil
	}
	return c.apply(ctx, key, ing, issuerName, iss)
}

// apply ensures the desired certificates of ing and drops the ones it no longer asks for.
func (c *Controller) apply(ctx context.Context, key string, ing *networkingv1.Ingress, issuerName string, iss Issuer) error {
	if iss.Solver.Type == edge.HTTP01 {
		iss.Solver.HTTP01Router = newRoute(c.backend, ing)
	}
	var keep []string
	var errs []error
	for _, d := range DesiredCertificates(ing, issuerName, iss) {
		if d.Problem != "" {
			c.event(ctx, ing, eventWarning, ReasonBadSpec, d.Problem)
			continue
		}
		if owner, taken := c.claim(key, d.Spec.Name); taken {
			c.event(ctx, ing, eventWarning, ReasonConflict, fmt.Sprintf("secret %s is already managed for Ingress %s", d.Spec.Name, owner))
			continue
		}
		keep = append(keep, d.Spec.Name)
		if err := c.mgr.Ensure(d.Spec); err != nil {
			c.event(ctx, ing, eventWarning, ReasonBadSpec, err.Error())
			errs = append(errs, err)
			continue
		}
		c.resyncIfMissing(d.Spec.Name)
	}
	c.release(key, keep)
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

// claim records key as the owner of name unless another Ingress owns it.
func (c *Controller) claim(key, name string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if owner, ok := c.owners[name]; ok && owner != key {
		return owner, true
	}
	c.owners[name] = key
	return "", false
}

// release drops the certificates key owned that are not in keep.
func (c *Controller) release(key string, keep []string) {
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
