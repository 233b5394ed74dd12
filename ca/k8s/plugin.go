package k8s

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/ca"
)

// PluginFormat is the layout of a plug-in CA Secret.
type PluginFormat string

// Plug-in CA Secret formats.
const (
	// PluginAuto picks istio when the Secret has ca-cert.pem, else tls.
	PluginAuto PluginFormat = "auto"
	// PluginIstio is Istio's cacerts: ca-cert.pem, ca-key.pem,
	// root-cert.pem, cert-chain.pem.
	PluginIstio PluginFormat = "istio"
	// PluginTLS is a kubernetes.io/tls Secret with ca.crt, as cert-manager
	// writes for a CA Certificate: tls.crt the CA certificate (its chain
	// may follow), tls.key its key, ca.crt the root.
	PluginTLS PluginFormat = "tls"
)

// ParsePluginFormat accepts "", auto, istio and tls.
func ParsePluginFormat(s string) (PluginFormat, error) {
	switch f := PluginFormat(s); f {
	case "":
		return PluginAuto, nil
	case PluginAuto, PluginIstio, PluginTLS:
		return f, nil
	}
	return "", fmt.Errorf("k8s: plug-in CA format %q: want auto, istio or tls", s)
}

// The keys of each format, by the piece of CA material they hold.
var pluginKeys = map[PluginFormat]map[ca.PluginPart]string{
	PluginIstio: {ca.PartRoot: "root-cert.pem", ca.PartCert: "ca-cert.pem", ca.PartKey: "ca-key.pem", ca.PartChain: "cert-chain.pem"},
	PluginTLS:   {ca.PartRoot: "ca.crt", ca.PartCert: corev1.TLSCertKey, ca.PartKey: corev1.TLSPrivateKeyKey, ca.PartChain: corev1.TLSCertKey},
}

// ErrPluginSecret: the plug-in CA Secret is missing, incomplete or its
// material is refused (the error names the Secret and the key).
var ErrPluginSecret = errors.New("k8s: plug-in CA Secret")

// PluginConfig names the plug-in CA Secret (in the server's namespace).
type PluginConfig struct {
	Client      kubernetes.Interface
	Namespace   string
	Name        string
	Format      PluginFormat // default auto
	TrustDomain spiffeid.TrustDomain
	// WarnBefore is how long before the CA certificate's end a warning is
	// logged (default 30 days; at most a quarter of its life).
	WarnBefore time.Duration
	Clock      clock.Clock
	Logger     *slog.Logger
}

// DefaultPluginWarnBefore is PluginConfig.WarnBefore's default.
const DefaultPluginWarnBefore = 30 * 24 * time.Hour

func (c *PluginConfig) fill() error {
	if c.Client == nil || c.Namespace == "" || c.Name == "" || c.TrustDomain.IsZero() {
		return errors.New("k8s: plug-in CA config: Client, Namespace, Name and TrustDomain are required")
	}
	if c.Format == "" {
		c.Format = PluginAuto
	}
	if c.WarnBefore == 0 {
		c.WarnBefore = DefaultPluginWarnBefore
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func (c *PluginConfig) ref() string { return c.Namespace + "/" + c.Name }

// ReadPlugin gets the plug-in CA Secret and validates it.
func ReadPlugin(ctx context.Context, cfg PluginConfig) (*ca.Authority, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	sec, err := cfg.Client.CoreV1().Secrets(cfg.Namespace).Get(ctx, cfg.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrPluginSecret, cfg.ref(), err)
	}
	return ParsePluginSecret(sec, cfg.Format, cfg.TrustDomain, cfg.Clock.Now())
}

// ParsePluginSecret validates a plug-in CA Secret of format f (auto:
// detected by its keys). Errors name the Secret and the key at fault.
func ParsePluginSecret(sec *corev1.Secret, f PluginFormat, td spiffeid.TrustDomain, now time.Time) (*ca.Authority, error) {
	ref := sec.Namespace + "/" + sec.Name
	if f == PluginAuto || f == "" {
		f = detectFormat(sec)
	}
	keys := pluginKeys[f]
	if keys == nil {
		return nil, fmt.Errorf("%w %s: unknown format %q", ErrPluginSecret, ref, f)
	}
	for _, p := range []ca.PluginPart{ca.PartRoot, ca.PartCert, ca.PartKey} {
		if len(sec.Data[keys[p]]) == 0 {
			return nil, fmt.Errorf("%w %s (%s format): key %q is missing or empty", ErrPluginSecret, ref, f, keys[p])
		}
	}
	m := ca.PluginMaterial{Root: sec.Data[keys[ca.PartRoot]], Cert: sec.Data[keys[ca.PartCert]], Key: sec.Data[keys[ca.PartKey]], TrustDomain: td, Now: now}
	if f == PluginIstio {
		m.Chain = sec.Data[keys[ca.PartChain]]
	}
	a, err := ca.ParsePlugin(m)
	var pe *ca.PluginError
	if errors.As(err, &pe) {
		return nil, fmt.Errorf("%w %s (%s format): key %q: %w", ErrPluginSecret, ref, f, keys[pe.Part], pe.Err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrPluginSecret, ref, err)
	}
	return a, nil
}

func detectFormat(sec *corev1.Secret) PluginFormat {
	if _, ok := sec.Data[pluginKeys[PluginIstio][ca.PartCert]]; ok {
		return PluginIstio
	}
	return PluginTLS
}

// ExpiryWarningAt is when a warning about a plugged CA certificate's end
// starts: WarnBefore before NotAfter, or a quarter of its life before when
// that is shorter. Pure.
func ExpiryWarningAt(cert *x509.Certificate, warnBefore time.Duration) time.Time {
	return cert.NotAfter.Add(-min(warnBefore, cert.NotAfter.Sub(cert.NotBefore)/4))
}

// Plugger is what the watcher needs of the CA.
type Plugger interface {
	Plug(*ca.Authority) (ca.PlugOutcome, error)
}

var _ Plugger = (*ca.CA)(nil)

// PluginWatcher is leader-only work: it loads the plug-in CA Secret on
// every change and rolls it into the CA (ca.CA.Plug); State then writes
// the result to the CA Secret, which the followers load. A refused Secret
// is logged with its reason and the CA keeps what it has.
type PluginWatcher struct {
	cfg PluginConfig
	ca  Plugger

	mu         sync.Mutex
	status     PluginStatus
	warnedAt   time.Time
	warnedCert string
}

// PluginStatus is the watcher's last result, for `certmesh status`.
type PluginStatus struct {
	Secret       string    `json:"secret"`
	Authority    string    `json:"authority,omitempty"`
	CertNotAfter time.Time `json:"caCertNotAfter,omitzero"`
	Outcome      string    `json:"outcome,omitempty"`
	Error        string    `json:"error,omitempty"`
}

// NewPluginWatcher checks cfg; it starts nothing.
func NewPluginWatcher(cfg PluginConfig, c Plugger) (*PluginWatcher, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if c == nil {
		return nil, errors.New("k8s: plug-in CA config: CA is required")
	}
	return &PluginWatcher{cfg: cfg, ca: c, status: PluginStatus{Secret: cfg.ref()}}, nil
}

// pluginRecheck is how often the watcher looks again without an event (the
// expiry warning).
const pluginRecheck = time.Hour

// Run watches the one Secret (get/list/watch on it by name) until ctx ends.
func (w *PluginWatcher) Run(ctx context.Context) error {
	sw, ok, err := watchSecret(ctx, w.cfg.Client, w.cfg.Namespace, w.cfg.Name, "plug-in CA Secret")
	if err != nil {
		return err
	}
	defer sw.stop()
	if !ok {
		return nil
	}
	for {
		w.ProcessItem(sw.get())
		select {
		case <-ctx.Done():
			return nil
		case <-sw.changed:
		case <-w.cfg.Clock.After(pluginRecheck):
		}
	}
}

// ProcessItem handles the Secret as last read (or the error reading it).
func (w *PluginWatcher) ProcessItem(sec *corev1.Secret, getErr error) {
	log := w.cfg.Logger.With("secret", w.cfg.ref())
	switch {
	case apierrors.IsNotFound(getErr):
		w.fail(log, fmt.Errorf("%w %s: not found; the CA keeps signing with what it has", ErrPluginSecret, w.cfg.ref()))
		return
	case getErr != nil:
		w.fail(log, fmt.Errorf("%w %s: %w", ErrPluginSecret, w.cfg.ref(), getErr))
		return
	}
	now := w.cfg.Clock.Now()
	a, err := ParsePluginSecret(sec, w.cfg.Format, w.cfg.TrustDomain, now)
	if err != nil {
		w.fail(log, err)
		return
	}
	out, err := w.ca.Plug(a)
	if err != nil {
		w.fail(log, fmt.Errorf("%w %s: %w", ErrPluginSecret, w.cfg.ref(), err))
		return
	}
	if out != ca.PlugUnchanged {
		log.Info("plug-in CA Secret rolled into the CA", "authority", a.ID, "outcome", out, "ca_not_after", a.Intermediate.NotAfter)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if out == ca.PlugUnchanged && w.status.Authority == a.ID {
		out = ca.PlugOutcome(w.status.Outcome) // keep the last change
	}
	w.status = PluginStatus{Secret: w.cfg.ref(), Authority: a.ID, CertNotAfter: a.Intermediate.NotAfter, Outcome: string(out)}
	w.warnExpiry(log, now, a.Intermediate)
}

// warnExpiry logs once a day from ExpiryWarningAt on. Called with w.mu held.
func (w *PluginWatcher) warnExpiry(log *slog.Logger, now time.Time, cert *x509.Certificate) {
	if now.Before(ExpiryWarningAt(cert, w.cfg.WarnBefore)) {
		return
	}
	serial := cert.SerialNumber.String()
	if serial == w.warnedCert && now.Sub(w.warnedAt) < 24*time.Hour {
		return
	}
	w.warnedCert, w.warnedAt = serial, now
	log.Warn("plug-in CA certificate expires soon and certmesh cannot renew it (no root key): replace the Secret",
		"not_after", cert.NotAfter, "left", cert.NotAfter.Sub(now).Round(time.Minute))
}

func (w *PluginWatcher) fail(log *slog.Logger, err error) {
	log.Error("plug-in CA Secret refused; the CA keeps signing with what it has", "error", err)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.status.Error = err.Error()
}

// Status is the last result.
func (w *PluginWatcher) Status() PluginStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}
