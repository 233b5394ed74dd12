package inject

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// BundleConfig configures a BundleReconciler.
type BundleConfig struct {
	Client kubernetes.Interface
	// Name of the MutatingWebhookConfiguration (default "certmesh-sidecar-injector").
	Name string
	// Bundle returns the CA's trust bundle PEM (ca.CA.BundlePEM) and Changed a channel
	// closed at its next change (ca.CA.BundleChanged).
	Bundle  func() []byte
	Changed func() <-chan struct{}
	// Resync re-checks this often even without a change, so a re-applied manifest that
	// dropped caBundle is repaired (default 1m).
	Resync time.Duration
	Clock  clock.Clock
	Logger *slog.Logger
}

// DefaultConfigurationName is the MutatingWebhookConfiguration deploy/ installs.
const DefaultConfigurationName = "certmesh-sidecar-injector"

// BundleReconciler keeps the caBundle of every webhook in the configuration equal to
// the CA's bundle, so the apiserver trusts the webhook's serving certificate through
// CA rotations (the bundle holds old and new roots during the overlap). It compares
// before it writes and writes with the resourceVersion it read, so running it on every
// replica is safe; running it on the leader only (a func(ctx) error under the leader
// runner) saves the duplicate reads.
type BundleReconciler struct{ cfg BundleConfig }

// NewBundleReconciler validates cfg.
func NewBundleReconciler(cfg BundleConfig) (*BundleReconciler, error) {
	if cfg.Client == nil || cfg.Bundle == nil || cfg.Changed == nil {
		return nil, errors.New("inject: Client, Bundle and Changed are required")
	}
	if cfg.Name == "" {
		cfg.Name = DefaultConfigurationName
	}
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &BundleReconciler{cfg: cfg}, nil
}

// Reconcile makes one pass; it reports whether it wrote. A missing configuration is
// not an error (nothing to keep current yet).
func (r *BundleReconciler) Reconcile(ctx context.Context) (bool, error) {
	api := r.cfg.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cur, err := api.Get(ctx, r.cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("inject: get %s: %w", r.cfg.Name, err)
	}
	bundle := r.cfg.Bundle()
	next := cur.DeepCopy()
	changed := false
	for i := range next.Webhooks {
		if !bytes.Equal(next.Webhooks[i].ClientConfig.CABundle, bundle) {
			next.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	if _, err := api.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		return false, fmt.Errorf("inject: update %s: %w", r.cfg.Name, err)
	}
	r.cfg.Logger.Info("webhook: caBundle updated", "configuration", r.cfg.Name)
	return true, nil
}

// Run reconciles at once, at every bundle change and every Resync until ctx ends.
// Errors are logged and retried at the next tick.
func (r *BundleReconciler) Run(ctx context.Context) error {
	for {
		changed := r.cfg.Changed()
		if _, err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("webhook: caBundle", "err", err)
		}
		t := r.cfg.Clock.NewTimer(r.cfg.Resync)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-changed:
			t.Stop()
		case <-t.C():
		}
	}
}
