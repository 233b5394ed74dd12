// Package k8s keeps certmesh's CA state in the Kubernetes API server so that
// several server replicas share one CA: the CA's files live in a Secret
// (created once, with optimistic concurrency), every replica mirrors it into
// its local CA directory and reloads on change, and a Leader (a Lease) picks
// the one replica that advances rotation and publishes the trust bundle.
package k8s

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/ca"
)

// Defaults for the objects certmesh owns.
const (
	DefaultSecretName     = "certmesh-ca"
	TrustDomainAnnotation = "certmesh.io/trust-domain"
	ManagedByLabel        = "app.kubernetes.io/managed-by"
	ManagedByValue        = "certmesh"
)

// Errors of the shared state.
var (
	// ErrTrustDomainMismatch: the Secret holds a CA of another trust domain.
	ErrTrustDomainMismatch = errors.New("k8s: CA Secret belongs to another trust domain")
	// ErrLostUpdate: another replica changed the Secret first; this
	// replica's local change was discarded and the Secret's state loaded.
	ErrLostUpdate = errors.New("k8s: CA Secret changed concurrently; local change discarded")
)

// StateConfig names the Secret that holds the CA. Client, Namespace and
// TrustDomain are required.
type StateConfig struct {
	Client      kubernetes.Interface
	Namespace   string
	Name        string // default certmesh-ca
	TrustDomain spiffeid.TrustDomain
	Logger      *slog.Logger
}

func (c *StateConfig) fill() error {
	if c.Client == nil || c.Namespace == "" || c.TrustDomain.IsZero() {
		return errors.New("k8s: config: Client, Namespace and TrustDomain are required")
	}
	if c.Name == "" {
		c.Name = DefaultSecretName
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// secretKey maps a CA file path to a Secret data key ('/' is not allowed).
// Authority IDs are hex, so the mapping is reversible.
func secretKey(path string) string { return strings.ReplaceAll(path, "/", ".") }

func filePath(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "authorities.")
	if !ok {
		return key, true
	}
	id, file, ok := strings.Cut(rest, ".")
	return "authorities/" + id + "/" + file, ok
}

func toSecretData(f ca.Files) map[string][]byte {
	out := make(map[string][]byte, len(f))
	for p, b := range f {
		out[secretKey(p)] = b
	}
	return out
}

func fromSecret(s *corev1.Secret, td spiffeid.TrustDomain) (ca.Files, error) {
	if got := s.Annotations[TrustDomainAnnotation]; got != td.Name() {
		return nil, fmt.Errorf("%w: %s/%s is for %q, this server for %q", ErrTrustDomainMismatch, s.Namespace, s.Name, got, td.Name())
	}
	out := ca.Files{}
	for k, v := range s.Data {
		p, ok := filePath(k)
		if !ok {
			return nil, fmt.Errorf("k8s: %s/%s: unexpected key %q", s.Namespace, s.Name, k)
		}
		out[p] = v
	}
	return out, nil
}

func sameFiles(a, b ca.Files) bool { return maps.EqualFunc(a, b, bytes.Equal) }

func (c *StateConfig) newSecret(f ca.Files) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: c.Name, Namespace: c.Namespace,
			Labels:      map[string]string{ManagedByLabel: ManagedByValue},
			Annotations: map[string]string{TrustDomainAnnotation: c.TrustDomain.Name()},
		},
		Type: corev1.SecretTypeOpaque,
		Data: toSecretData(f),
	}
}

// Prime copies the CA Secret, if there is one, into dir before ca.New opens
// it, so a replica that starts after the first never makes a CA of its own.
// found is false when no Secret exists yet.
func Prime(ctx context.Context, cfg StateConfig, dir string) (found bool, err error) {
	if err := cfg.fill(); err != nil {
		return false, err
	}
	s, err := cfg.Client.CoreV1().Secrets(cfg.Namespace).Get(ctx, cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("k8s: get CA Secret: %w", err)
	}
	files, err := fromSecret(s, cfg.TrustDomain)
	if err != nil {
		return false, err
	}
	if err := ca.WriteFiles(dir, files); err != nil {
		return false, err
	}
	return true, nil
}
