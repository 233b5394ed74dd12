package ingress

import (
	"context"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmesh/certmesh/edge"
)

// Event reasons on Ingresses and Gateways.
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

// observer turns the Manager's reports into Events on the owning Ingress or Gateway.
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

// eventFor records an Event on the object owning the certificate name.
func (c *Controller) eventFor(name, typ, reason, msg string) {
	c.mu.Lock()
	key, ok := c.owners[name]
	c.mu.Unlock()
	if !ok || c.ingLister == nil {
		return
	}
	src, found, err := c.lookup(key)
	if err != nil || !found {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	c.event(ctx, src.reference(), typ, reason, msg)
}

// event writes one core/v1 Event about the object ref. Failures are logged only: an
// Event is a courtesy, never a reason to stop.
func (c *Controller) event(ctx context.Context, ref corev1.ObjectReference, typ, reason, msg string) {
	now := metav1.NewTime(c.cfg.Clock.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      ref.Name + "." + strconv.FormatInt(now.UnixNano(), 16),
			Namespace: ref.Namespace,
		},
		InvolvedObject: ref,
		Reason:         reason, Message: msg, Type: typ, Count: 1,
		FirstTimestamp: now, LastTimestamp: now,
		Source:              corev1.EventSource{Component: component},
		ReportingController: "certmesh.io/ingress", ReportingInstance: c.cfg.ReportingInstance,
	}
	if _, err := c.cfg.Client.CoreV1().Events(ref.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		c.cfg.Logger.Warn("ingress: event", "object", ref.Kind+" "+ref.Namespace+"/"+ref.Name, "reason", reason, "err", err)
	}
}
