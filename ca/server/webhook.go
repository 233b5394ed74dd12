package server

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmesh/certmesh/ca/service"
	"github.com/certmesh/certmesh/sds/inject"
)

// WebhookConfig serves the sidecar-injecting admission webhook on every
// replica; the leader keeps its caBundle current. It needs Kubernetes.
type WebhookConfig struct {
	Addr    string // e.g. :9443
	DNSName string // in the webhook's serving certificate
	// ServerAddress is the CA address injected agents connect to.
	ServerAddress string
	AgentImage    string
	EnvoyImage    string
}

// buildWebhook makes the webhook's server (every replica) and its caBundle
// reconciler (leader).
func (s *Server) buildWebhook() error {
	wc := s.cfg.Webhook
	if wc == nil {
		return nil
	}
	client := s.cfg.Kubernetes.Client
	nsLabels := func(ctx context.Context, ns string) (map[string]string, error) {
		got, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return got.Labels, nil
	}
	h, err := inject.NewHandler(inject.Config{
		TrustDomain: s.CA.TrustDomain(), ServerAddr: wc.ServerAddress,
		AgentImage: wc.AgentImage, EnvoyImage: wc.EnvoyImage,
	}, nsLabels, s.cfg.Logger)
	if err != nil {
		return fmt.Errorf("server: webhook: %w", err)
	}
	cert := &service.ServingCert{CA: s.CA, DNSNames: []string{wc.DNSName}, Clock: s.cfg.Clock}
	ws, err := inject.NewServer(inject.ServerConfig{Addr: wc.Addr, Handler: h, GetCertificate: cert.GetCertificate})
	if err != nil {
		return err
	}
	rec, err := inject.NewBundleReconciler(inject.BundleConfig{
		Client: client, Bundle: s.CA.BundlePEM, Changed: s.CA.BundleChanged, Resync: time.Minute, Logger: s.cfg.Logger,
	})
	if err != nil {
		return err
	}
	s.runners = append(s.runners, ws.Run)
	return s.Leader.Add("webhook-cabundle", rec.Run)
}
