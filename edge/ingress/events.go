package ingress

import (
	"context"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/certmesh/certmesh/edge"
)

// Event reasons on Ingresses.
const (
	ReasonIssued    = "Issued"
	ReasonRestored  = "Restored"
	ReasonFailed    = "IssuanceFailed"
	ReasonBadIssuer = "BadIssuer"
	ReasonBadSpec   = "BadTLSEntry"
	ReasonConflict  = "SecretConflict"

	eventNormal  = corev1.EventTypeNormal
	eventWarning = corev1.EventTypeWarning
	component    = "certmesh-ingress"
	eventTimeout = 10 * time.Second
)

// observer turns the Manager's reports into Events on the owning Ingress.
type observer struct{ c *Controller }

var _ edge.Observer = observer{}

// CertificateStored implements edge.Observer.
func (o observer) CertificateStored(name string, sv edge.Served, restored bool) {
	reason, verb := ReasonIssued, "issued"
	if restored {
		reason, verb = ReasonRestored, "restored"
	}
	_, secret := SplitCertificateName(name)
	o.c.eventFor(name, eventNormal, reason,
		fmt.Sprintf("certificate for %v %s into Secret %s, valid until %s", sv.Leaf().DNSNames, verb, secret, sv.NotAfter.UTC().Format(time.RFC3339)))
}

// CertificateFailed implements edge.Observer.
func (o observer) CertificateFailed(name string, err error, retryAt time.Time) {
	o.c.eventFor(name, eventWarning, ReasonFailed,
		fmt.Sprintf("%v; retrying at %s", err, retryAt.UTC().Format(time.RFC3339)))
}

// eventFor records an Event on the Ingress owning the certificate name.
func (c *Controller) eventFor(name, typ, reason, msg string) {
	c.mu.Lock()
	key, ok := c.owners[name]
	c.mu.Unlock()
	if !ok || c.ingLister == nil {
		return
	}
	ns, n, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return
	}
	ing, err := c.ingLister.Ingresses(ns).Get(n)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	c.event(ctx, ing, typ, reason, msg)
}

// event writes one core/v1 Event about ing. Failures are logged only: an Event is a
// courtesy, never a reason to stop.
func (c *Controller) event(ctx context.Context, ing *networkingv1.Ingress, typ, reason, msg string) {
	now := metav1.NewTime(c.cfg.Clock.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      ing.Name + "." + strconv.FormatInt(now.UnixNano(), 16),
			Namespace: ing.Namespace,
		},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: "networking.k8s.io/v1", Kind: "Ingress",
			Namespace: ing.Namespace, Name: ing.Name, UID: ing.UID, ResourceVersion: ing.ResourceVersion,
		},
		Reason: reason, Message: msg, Type: typ, Count: 1,
		FirstTimestamp: now, LastTimestamp: now,
		Source:              corev1.EventSource{Component: component},
		ReportingController: "certmesh.io/ingress", ReportingInstance: c.cfg.ReportingInstance,
	}
	if _, err := c.cfg.Client.CoreV1().Events(ing.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		c.cfg.Logger.Warn("ingress: event", "ingress", ing.Namespace+"/"+ing.Name, "reason", reason, "err", err)
	}
}
