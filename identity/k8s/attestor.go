// Package k8s attests callers that present a Kubernetes ServiceAccount
// token: the token is checked with the TokenReview API (so the apiserver, not
// certmesh, decides whether it is valid, bound to a live pod, and meant for
// certmesh's audience) and system:serviceaccount:<ns>:<sa> is mapped to a
// SPIFFE ID through identity.IDTemplate. DNS SANs are allowed only for the
// Services that select the caller's pod.
package k8s

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/identity"
)

// AttestorName labels identities proven by a ServiceAccount token.
const AttestorName = "k8s_sat"

// Defaults of Config.
const (
	DefaultCacheTTL      = 10 * time.Second
	DefaultCacheSize     = 4096
	DefaultClusterDomain = "cluster.local"
	// podNameExtra is the TokenReview extra field naming the bound pod.
	podNameExtra = "authentication.kubernetes.io/pod-name"
	podUIDExtra  = "authentication.kubernetes.io/pod-uid"
	saUserPrefix = "system:serviceaccount:"
	// joinTokenPrefix marks certmesh join tokens, which are never JWTs.
	joinTokenPrefix = "cmjt."
)

// Refusals (identity.Refusal), each with its gRPC code and its own reason
// label in the CA's refusal counter.
var (
	// ErrWrongAudience: the token was not issued for certmesh's audience.
	ErrWrongAudience = identity.NewRefusal(codes.Unauthenticated, "k8s_wrong_audience", "k8s: token audience does not include certmesh's")
	// ErrExpired: the token's exp has passed.
	ErrExpired = identity.NewRefusal(codes.Unauthenticated, "k8s_token_expired", "k8s: token expired")
	// ErrPodGone: the token is bound to a pod that no longer exists.
	ErrPodGone = identity.NewRefusal(codes.Unauthenticated, "k8s_pod_gone", "k8s: token's pod no longer exists")
	// ErrExcluded: the ServiceAccount or its namespace is excluded by policy.
	ErrExcluded = identity.NewRefusal(codes.PermissionDenied, "k8s_excluded", "k8s: service account excluded by policy")
	// ErrRejected: the apiserver did not authenticate the token.
	ErrRejected = identity.NewRefusal(codes.Unauthenticated, "k8s_token_rejected", "k8s: token rejected by TokenReview")
	// ErrNotServiceAccount: the token authenticates a user that is not a ServiceAccount.
	ErrNotServiceAccount = identity.NewRefusal(codes.Unauthenticated, "k8s_not_service_account", "k8s: token does not belong to a service account")
	// ErrReviewUnavailable: the apiserver could not be asked; try again later.
	ErrReviewUnavailable = identity.NewRefusal(codes.Unavailable, "k8s_review_unavailable", "k8s: TokenReview unavailable")
)

// Config configures an Attestor. Client and TrustDomain are required.
type Config struct {
	Client      kubernetes.Interface
	TrustDomain spiffeid.TrustDomain
	// Template maps a ServiceAccount to its ID (default /ns/<ns>/sa/<sa>).
	Template *identity.IDTemplate
	// Audience the token must be issued for (default "spiffe://<td>").
	Audience string
	Policy   Policy
	// CacheTTL bounds how long a review is reused (default 10 s, the
	// apiserver's own review cache); CacheSize bounds the entries (4096).
	CacheTTL      time.Duration
	CacheSize     int
	ClusterDomain string // for Service DNS names (default cluster.local)
	// WatchServices makes Run keep every Service's selector in an informer, so a
	// review that needs DNS names costs no Services LIST (one watch per replica
	// instead of one LIST of the namespace per uncached review).
	WatchServices bool
	// WatchPods makes Run keep every pod's name, UID and labels in an informer
	// (about 1 KB per pod of the cluster, per replica), so an uncached
	// review costs the TokenReview alone instead of also a GET of the token's
	// pod. A pod the cache does not hold with the token's UID is still read from
	// the apiserver, so the cache never refuses a token.
	WatchPods bool
	// Metadata, when set, is a metadata-only client (k8s.io/client-go/metadata,
	// from the same rest config as Client) for the Pod watch: the apiserver then
	// sends pods' metadata only, not their spec and status at every change.
	// Without it the Pod watch decodes whole pods and trims them.
	Metadata metadata.Interface
	Clock    clock.PassiveClock
	Logger   *slog.Logger
}

// Policy excludes ServiceAccounts from getting identities at all.
type Policy struct {
	// ExcludedNamespaces: no ServiceAccount there gets an identity.
	ExcludedNamespaces []string
	// ExcludedServiceAccounts, as "namespace/name".
	ExcludedServiceAccounts []string
}

// Excluded reports whether policy refuses ns/sa.
func (p Policy) Excluded(ns, sa string) bool {
	return slices.Contains(p.ExcludedNamespaces, ns) || slices.Contains(p.ExcludedServiceAccounts, ns+"/"+sa)
}

// Attestor implements identity.Attestor for ServiceAccount tokens.
type Attestor struct {
	cfg      Config
	cache    *reviewCache
	services synced[corelisters.ServiceLister]
	pods     synced[cache.Store] // of *metav1.PartialObjectMetadata, see podLabelsOnly
}

var _ identity.Attestor = (*Attestor)(nil)

// New checks cfg and fills defaults.
func New(cfg Config) (*Attestor, error) {
	if cfg.Client == nil || cfg.TrustDomain.IsZero() {
		return nil, errors.New("k8s: config: Client and TrustDomain are required")
	}
	if cfg.Template == nil {
		t, err := identity.NewIDTemplate(cfg.TrustDomain, identity.DefaultKubernetesIDPath)
		if err != nil {
			return nil, err
		}
		cfg.Template = t
	}
	if cfg.Audience == "" {
		cfg.Audience = spiffeid.RequireFromPath(cfg.TrustDomain, "").String()
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = DefaultClusterDomain
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Attestor{cfg: cfg, cache: newReviewCache(cfg.CacheSize)}, nil
}

// Audience is the audience tokens must carry.
func (a *Attestor) Audience() string { return a.cfg.Audience }

// Attest implements identity.Attestor. Tokens that are not Kubernetes
// ServiceAccount JWTs (join tokens, anything else) are not applicable.
func (a *Attestor) Attest(ctx context.Context, cred identity.Credential) (identity.Identity, error) {
	tok := cred.BearerToken
	if tok == "" || strings.HasPrefix(tok, joinTokenPrefix) {
		return identity.Identity{}, identity.ErrNotApplicable
	}
	c, err := parseClaims(tok)
	if err != nil {
		return identity.Identity{}, fmt.Errorf("%w: %v", identity.ErrNotApplicable, err)
	}
	now := a.cfg.Clock.Now()
	if err := c.precheck(now, a.cfg.Audience); err != nil {
		return identity.Identity{}, err
	}
	key := sha256.Sum256([]byte(tok))
	if id, err, ok := a.cache.get(key, now); ok {
		return id, err
	}
	id, err := a.review(ctx, tok, c)
	if !errors.Is(err, ErrReviewUnavailable) {
		a.cache.put(key, id, err, minTime(now.Add(a.cfg.CacheTTL), c.expiry()))
	}
	return id, err
}

// review asks the apiserver, then applies policy and finds the DNS names.
func (a *Attestor) review(ctx context.Context, tok string, c claims) (identity.Identity, error) {
	rv, err := a.cfg.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: []string{a.cfg.Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return identity.Identity{}, fmt.Errorf("%w: %v", ErrReviewUnavailable, err)
	}
	if !rv.Status.Authenticated {
		return identity.Identity{}, a.whyRejected(ctx, c, rv.Status.Error)
	}
	// An answer that names no audience did not check ours (an apiserver
	// that ignores spec.audiences, or a webhook authenticator): refused.
	if !slices.Contains(rv.Status.Audiences, a.cfg.Audience) {
		return identity.Identity{}, fmt.Errorf("%w: reviewed for %v", ErrWrongAudience, rv.Status.Audiences)
	}
	ns, sa, ok := parseServiceAccountUser(rv.Status.User.Username)
	if !ok {
		return identity.Identity{}, fmt.Errorf("%w: %q", ErrNotServiceAccount, rv.Status.User.Username)
	}
	if a.cfg.Policy.Excluded(ns, sa) {
		return identity.Identity{}, fmt.Errorf("%w: %s/%s", ErrExcluded, ns, sa)
	}
	id, err := a.cfg.Template.ForServiceAccount(ns, sa)
	if err != nil {
		return identity.Identity{}, err
	}
	podName, podUID := first(rv.Status.User.Extra[podNameExtra]), first(rv.Status.User.Extra[podUIDExtra])
	dns, err := a.podDNSNames(ctx, ns, podName, podUID)
	if err != nil {
		return identity.Identity{}, err
	}
	return identity.Identity{ID: id, DNSNames: dns, Attestor: AttestorName, Instance: podInstance(podName, podUID)}, nil
}

// whyRejected tells a token whose pod was deleted from any other rejection
// by looking the pod up, rather than by reading the review's error text.
func (a *Attestor) whyRejected(ctx context.Context, c claims, reason string) error {
	if c.K8s.Pod != nil && c.K8s.Namespace != "" {
		pod, err := a.cfg.Client.CoreV1().Pods(c.K8s.Namespace).Get(ctx, c.K8s.Pod.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return fmt.Errorf("%w: %s/%s", ErrPodGone, c.K8s.Namespace, c.K8s.Pod.Name)
		case err == nil && string(pod.UID) != c.K8s.Pod.UID:
			return fmt.Errorf("%w: %s/%s was recreated", ErrPodGone, c.K8s.Namespace, c.K8s.Pod.Name)
		}
	}
	return fmt.Errorf("%w: %s", ErrRejected, reason)
}

func parseServiceAccountUser(user string) (ns, sa string, ok bool) {
	rest, ok := strings.CutPrefix(user, saUserPrefix)
	if !ok {
		return "", "", false
	}
	ns, sa, ok = strings.Cut(rest, ":")
	return ns, sa, ok && ns != "" && sa != "" && !strings.Contains(sa, ":")
}

// podInstance is the Identity.Instance of a token: the UID of the pod the
// apiserver says it is bound to, or none for a token not bound to a pod.
func podInstance(podName, podUID string) string {
	if podName == "" {
		return ""
	}
	return podUID
}

func first(v authenticationv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func minTime(a, b time.Time) time.Time {
	if b.IsZero() || a.Before(b) {
		return a
	}
	return b
}
