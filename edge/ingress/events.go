package ingress

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

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
	c.event(src.reference(), typ, reason, msg)
}

// startEvents starts the Event broadcaster: client-go's recorder, whose
// correlator turns a repeated Event (the same problem seen at every resync) into
// one Event with a count, and rate-limits a flood. Writing Events never blocks
// the controller; an Event that cannot be written is dropped and logged.
func (c *Controller) startEvents() (stop func()) {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.cfg.Client.CoreV1().Events("")})
	c.recorder = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: component, Host: c.cfg.ReportingInstance})
	return b.Shutdown
}

// event records one core/v1 Event about the object ref.
func (c *Controller) event(ref corev1.ObjectReference, typ, reason, msg string) {
	c.recorder.Event(&ref, typ, reason, msg)
}
