package k8s

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/ca"
)

// State mirrors the CA between the Secret and the local CA directory. Every
// replica runs one: it loads the Secret whenever another replica changes it,
// and writes local changes (a rotation step, `certmesh ca rotate`) back with
// a resourceVersion-checked update, so two writers never both win.
type State struct {
	cfg StateConfig
	ca  *ca.CA
	clk clock.Clock

	mu     sync.Mutex
	lastRV string   // resourceVersion of the Secret the CA now holds
	last   ca.Files // its content
}

// NewState checks cfg; it does not contact the apiserver or start goroutines.
func NewState(cfg StateConfig, c *ca.CA, clk clock.Clock) (*State, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if c == nil {
		return nil, fmt.Errorf("k8s: config: CA is required")
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &State{cfg: cfg, ca: c, clk: clk}, nil
}

// Bootstrap makes the CA and the Secret agree once, before serving: with no
// Secret yet it creates one from the local CA; when another replica's Create
// won the race (AlreadyExists), the local CA is discarded and the winner's
// loaded. Two servers starting together thus end with ONE CA.
func (s *State) Bootstrap(ctx context.Context) error {
	secrets := s.cfg.Client.CoreV1().Secrets(s.cfg.Namespace)
	got, err := secrets.Get(ctx, s.cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		files, ferr := s.ca.ExportFiles()
		if ferr != nil {
			return ferr
		}
		created, cerr := secrets.Create(ctx, s.cfg.newSecret(files), metav1.CreateOptions{})
		if cerr == nil {
			s.remember(created.ResourceVersion, files)
			s.cfg.Logger.Info("published new CA to Secret", "secret", s.cfg.Namespace+"/"+s.cfg.Name)
			return nil
		}
		if !apierrors.IsAlreadyExists(cerr) {
			return fmt.Errorf("k8s: create CA Secret: %w", cerr)
		}
		s.cfg.Logger.Info("another replica created the CA first; loading its CA", "secret", s.cfg.Namespace+"/"+s.cfg.Name)
		got, err = secrets.Get(ctx, s.cfg.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("k8s: get CA Secret: %w", err)
	}
	return s.apply(got)
}

// apply loads the Secret into the CA unless it already holds that version.
func (s *State) apply(sec *corev1.Secret) error {
	files, err := fromSecret(sec, s.cfg.TrustDomain)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec.ResourceVersion == s.lastRV {
		return nil
	}
	local, err := s.ca.ExportFiles()
	if err != nil {
		return err
	}
	if !sameFiles(local, files) {
		if err := s.ca.Restore(files); err != nil {
			return err
		}
	}
	s.lastRV, s.last = sec.ResourceVersion, files
	return nil
}

func (s *State) remember(rv string, f ca.Files) {
	s.mu.Lock()
	s.lastRV, s.last = rv, f
	s.mu.Unlock()
}

// Publish writes the local CA state to the Secret if it changed, with the
// resourceVersion it was based on. On a conflict the Secret's newer state is
// loaded instead and ErrLostUpdate returned.
func (s *State) Publish(ctx context.Context) error {
	files, err := s.ca.ExportFiles()
	if err != nil {
		return err
	}
	s.mu.Lock()
	rv, unchanged := s.lastRV, sameFiles(files, s.last)
	s.mu.Unlock()
	if unchanged {
		return nil
	}
	sec := s.cfg.newSecret(files)
	sec.ResourceVersion = rv
	secrets := s.cfg.Client.CoreV1().Secrets(s.cfg.Namespace)
	updated, err := secrets.Update(ctx, sec, metav1.UpdateOptions{})
	switch {
	case err == nil:
		s.remember(updated.ResourceVersion, files)
		s.cfg.Logger.Info("published CA state to Secret", "resource_version", updated.ResourceVersion)
		return nil
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		latest, gerr := secrets.Get(ctx, s.cfg.Name, metav1.GetOptions{})
		if gerr != nil {
			return fmt.Errorf("k8s: publish CA state: %w", gerr)
		}
		if aerr := s.apply(latest); aerr != nil {
			return aerr
		}
		return fmt.Errorf("%w (%v)", ErrLostUpdate, err)
	default:
		return fmt.Errorf("k8s: publish CA state: %w", err)
	}
}

// Run watches the Secret (loading every change) and publishes local CA
// changes until ctx ends. Call Bootstrap first.
func (s *State) Run(ctx context.Context) error {
	w, ok, err := watchSecret(ctx, s.cfg.Client, s.cfg.Namespace, s.cfg.Name, "CA Secret")
	if err != nil {
		return err
	}
	defer w.stop()
	if !ok {
		return nil
	}
	for {
		changed := s.ca.BundleChanged()
		s.reconcile(ctx, w.get)
		select {
		case <-ctx.Done():
			return nil
		case <-w.changed:
		case <-changed:
		case <-s.clk.After(time.Minute): // retry after a failed step
		}
	}
}

// reconcile is one pass: load a newer Secret, publish a newer local state,
// recreate a deleted Secret.
func (s *State) reconcile(ctx context.Context, get func() (*corev1.Secret, error)) {
	sec, err := get()
	switch {
	case apierrors.IsNotFound(err):
		s.cfg.Logger.Warn("CA Secret is gone; recreating it from the local CA")
		s.remember("", nil)
		if err := s.Bootstrap(ctx); err != nil {
			s.cfg.Logger.Error("recreate CA Secret", "error", err)
		}
		return
	case err != nil:
		s.cfg.Logger.Error("read CA Secret", "error", err)
		return
	}
	if err := s.apply(sec); err != nil {
		s.cfg.Logger.Error("load CA Secret", "error", err)
		return
	}
	if err := s.Publish(ctx); err != nil {
		s.cfg.Logger.Warn("publish CA state", "error", err)
	}
}

// ResourceVersion is the Secret version the local CA holds (for tests and status).
func (s *State) ResourceVersion() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastRV
}
