// Package secretstore keeps edge certificates in kubernetes.io/tls Secrets and ACME
// account keys in Opaque Secrets, so that every certmesh server replica (and the next
// leader) sees the same state and ingress controllers read certificates where they
// expect them.
//
// A certificate named "ns/name" lives in Secret ns/name with the keys tls.crt, tls.key
// and ca.crt; an unqualified name lives in Config.Namespace. Each save is one Create or
// one Update carrying the resourceVersion read just before, so a concurrent writer
// makes the save fail with a Conflict (the edge Manager backs off and looks again)
// instead of interleaving keys from two certificates.
package secretstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/certmesh/certmesh/edge"
)

// Labels and annotations certmesh puts on the Secrets it writes.
const (
	// LabelManagedBy marks Secrets written by certmesh (value ManagedBy); the Ingress
	// controller watches only Secrets carrying it.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "certmesh"
	// AnnotationCertificate is the edge certificate name the Secret holds.
	AnnotationCertificate = "certmesh.io/certificate-name"
	// AnnotationIssuer is the ACME issuer of an account Secret.
	AnnotationIssuer = "certmesh.io/issuer"
	// Keys of an account Secret.
	KeyAccountKey    = "account.key"
	KeyAccountRecord = "account.json"
)

// Config configures a Store.
type Config struct {
	Client kubernetes.Interface
	// Namespace holds account Secrets and certificates with unqualified names
	// (normally certmesh's own namespace).
	Namespace string
	// AccountPrefix prefixes account Secret names (default "certmesh-acme-account-").
	AccountPrefix string
}

// Store is an edge.Store backed by Secrets.
type Store struct{ cfg Config }

var _ edge.Store = (*Store)(nil)

// New validates cfg.
func New(cfg Config) (*Store, error) {
	if cfg.Client == nil || cfg.Namespace == "" {
		return nil, errors.New("secretstore: Client and Namespace are required")
	}
	if cfg.AccountPrefix == "" {
		cfg.AccountPrefix = "certmesh-acme-account-"
	}
	return &Store{cfg: cfg}, nil
}

// SecretRef splits a certificate name into the namespace and name of its Secret.
func (s *Store) SecretRef(name string) (namespace, secret string) {
	if ns, n, ok := strings.Cut(name, "/"); ok {
		return ns, n
	}
	return s.cfg.Namespace, name
}

// LoadCertificate implements edge.Store.
func (s *Store) LoadCertificate(ctx context.Context, name string) (edge.Served, error) {
	ns, n := s.SecretRef(name)
	sec, err := s.cfg.Client.CoreV1().Secrets(ns).Get(ctx, n, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return edge.Served{}, fmt.Errorf("%w: %s: secret %s/%s: %w", edge.ErrNoCertificate, name, ns, n, fs.ErrNotExist)
	}
	if err != nil {
		return edge.Served{}, fmt.Errorf("secretstore: get %s/%s: %w", ns, n, err)
	}
	if len(sec.Data[corev1.TLSCertKey]) == 0 || len(sec.Data[corev1.TLSPrivateKeyKey]) == 0 {
		return edge.Served{}, fmt.Errorf("%w: %s: secret %s/%s has no tls.crt/tls.key: %w", edge.ErrNoCertificate, name, ns, n, fs.ErrNotExist)
	}
	return edge.ParseServed(name, sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey], sec.Data[edge.FileCA])
}

// SaveCertificate implements edge.Store: tls.crt, tls.key and ca.crt in one write.
func (s *Store) SaveCertificate(ctx context.Context, sv edge.Served) error {
	ns, n := s.SecretRef(sv.Name)
	data := map[string][]byte{
		corev1.TLSCertKey:       sv.CertPEM,
		corev1.TLSPrivateKeyKey: sv.KeyPEM,
		edge.FileCA:             sv.CAPEM,
	}
	ann := map[string]string{AnnotationCertificate: sv.Name}
	return s.upsert(ctx, ns, n, corev1.SecretTypeTLS, data, ann)
}

// LoadAccount implements edge.Store.
func (s *Store) LoadAccount(ctx context.Context, issuer string) (edge.AccountData, error) {
	n := s.accountSecret(issuer)
	sec, err := s.cfg.Client.CoreV1().Secrets(s.cfg.Namespace).Get(ctx, n, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return edge.AccountData{}, fmt.Errorf("secretstore: account %s: %w", issuer, fs.ErrNotExist)
	}
	if err != nil {
		return edge.AccountData{}, fmt.Errorf("secretstore: get %s/%s: %w", s.cfg.Namespace, n, err)
	}
	if len(sec.Data[KeyAccountKey]) == 0 {
		return edge.AccountData{}, fmt.Errorf("secretstore: account %s: no key: %w", issuer, fs.ErrNotExist)
	}
	return edge.AccountData{KeyPEM: sec.Data[KeyAccountKey], Record: sec.Data[KeyAccountRecord]}, nil
}

// SaveAccount implements edge.Store.
func (s *Store) SaveAccount(ctx context.Context, issuer string, acct edge.AccountData) error {
	data := map[string][]byte{KeyAccountKey: acct.KeyPEM}
	if acct.Record != nil {
		data[KeyAccountRecord] = acct.Record
	}
	ann := map[string]string{AnnotationIssuer: issuer}
	return s.upsert(ctx, s.cfg.Namespace, s.accountSecret(issuer), corev1.SecretTypeOpaque, data, ann)
}

func (s *Store) accountSecret(issuer string) string { return s.cfg.AccountPrefix + issuer }

// upsert creates the Secret or merges data into the existing one (keys certmesh does
// not own are kept), guarded by the resourceVersion it read.
func (s *Store) upsert(ctx context.Context, ns, name string, typ corev1.SecretType, data map[string][]byte, ann map[string]string) error {
	secrets := s.cfg.Client.CoreV1().Secrets(ns)
	cur, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		sec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: ns, Annotations: ann,
				Labels: map[string]string{LabelManagedBy: ManagedBy},
			},
			Type: typ, Data: data,
		}
		if _, err := secrets.Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("secretstore: create %s/%s: %w", ns, name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("secretstore: get %s/%s: %w", ns, name, err)
	}
	next := cur.DeepCopy()
	if next.Data == nil {
		next.Data = map[string][]byte{}
	}
	maps.Copy(next.Data, data)
	if next.Labels == nil {
		next.Labels = map[string]string{}
	}
	next.Labels[LabelManagedBy] = ManagedBy
	if next.Annotations == nil {
		next.Annotations = map[string]string{}
	}
	maps.Copy(next.Annotations, ann)
	if _, err := secrets.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("secretstore: update %s/%s: %w", ns, name, err)
	}
	return nil
}
