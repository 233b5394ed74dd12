package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/ca/service"
	"github.com/certmesh/certmesh/edge"
	"github.com/certmesh/certmesh/edge/ingress"
	"github.com/certmesh/certmesh/sds/inject"
)

// meshFlags add, in Kubernetes mode, the Ingress (and Gateway) certificate
// controller and the sidecar-injecting webhook to `certmesh server`.
type meshFlags struct {
	ingress       bool
	gatewayAPI    bool
	selfCheck     bool
	webhookAddr   string
	webhookDNS    string
	serverAddress string
	agentImage    string
	envoyImage    string

	ctrl *ingress.Controller
}

func (m *meshFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&m.ingress, "ingress", false, "obtain ACME certificates for annotated Ingresses (needs --kubernetes; HTTP-01 on --http01-addr)")
	fs.BoolVar(&m.gatewayAPI, "gateway-api", true, "with --ingress, also obtain certificates for annotated Gateway API Gateways once the Gateway API CRDs are served")
	fs.BoolVar(&m.selfCheck, "http01-self-check", true, "fetch each HTTP-01 challenge through the ingress before the CA validates it (off where the cluster cannot reach its own public names)")
	fs.StringVar(&m.webhookAddr, "webhook-addr", "", "serve the sidecar-injecting admission webhook on this address, e.g. :9443 (needs --kubernetes)")
	fs.StringVar(&m.webhookDNS, "webhook-dns", "certmesh-webhook.certmesh.svc", "DNS name in the webhook's serving certificate")
	fs.StringVar(&m.serverAddress, "server-address", "certmesh.certmesh.svc:8443", "CA address injected agents connect to")
	fs.StringVar(&m.agentImage, "agent-image", "ghcr.io/certmesh/certmesh:"+version, "image of the injected agent")
	fs.StringVar(&m.envoyImage, "envoy-image", "envoyproxy/envoy:v1.36.2", "image of the injected Envoy")
}

// meshRunners says where each part runs: leader-only work goes to the Lease holder
// (srv.Leader.Add), the webhook serves on every replica.
type meshRunners struct {
	leader map[string]func(context.Context) error
	every  []func(context.Context) error
}

// build makes the parts the flags ask for. kc is the server's Kubernetes config and
// rc its REST config (after kubeFlags.apply), http01Addr the edge flag.
func (m *meshFlags) build(srv *server.Server, kc *server.KubernetesConfig, rc *rest.Config, http01Addr string, log *slog.Logger) (meshRunners, error) {
	var r meshRunners
	if !m.ingress && m.webhookAddr == "" {
		return r, nil
	}
	if kc == nil || kc.Client == nil {
		return r, errors.New("--ingress and --webhook-addr need --kubernetes")
	}
	r.leader = map[string]func(context.Context) error{}
	if m.ingress {
		var check *http.Client
		if m.selfCheck {
			check = &http.Client{Timeout: 5 * time.Second}
		}
		var gateways gatewayclient.Interface
		if m.gatewayAPI && rc != nil {
			var err error
			if gateways, err = gatewayclient.NewForConfig(rc); err != nil {
				return r, fmt.Errorf("--gateway-api: %w", err)
			}
		}
		ctrl, err := ingress.New(ingress.Config{
			SelfCheck: check, Gateways: gateways,
			Client: kc.Client, Namespace: kc.Namespace, SolverPodIP: os.Getenv("POD_IP"),
			ReportingInstance: kc.Identity, Logger: log,
			Edge: edge.Config{HTTP01Addr: http01Addr, DNSProviders: dnsProviders()},
		})
		if err != nil {
			return r, fmt.Errorf("--ingress: %w", err)
		}
		m.ctrl = ctrl
		r.leader["ingress-certificates"] = ctrl.Run
	}
	if m.webhookAddr != "" {
		if err := m.buildWebhook(srv, kc.Client, &r, log); err != nil {
			return r, err
		}
	}
	return r, nil
}

func (m *meshFlags) buildWebhook(srv *server.Server, client kubernetes.Interface, r *meshRunners, log *slog.Logger) error {
	nsLabels := func(ctx context.Context, ns string) (map[string]string, error) {
		got, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return got.Labels, nil
	}
	h, err := inject.NewHandler(inject.Config{
		TrustDomain: srv.CA.TrustDomain(), ServerAddr: m.serverAddress,
		AgentImage: m.agentImage, EnvoyImage: m.envoyImage,
	}, nsLabels, log)
	if err != nil {
		return fmt.Errorf("--webhook-addr: %w", err)
	}
	cert := &service.ServingCert{CA: srv.CA, DNSNames: []string{m.webhookDNS}, Clock: clock.RealClock{}}
	ws, err := inject.NewServer(inject.ServerConfig{Addr: m.webhookAddr, Handler: h, GetCertificate: cert.GetCertificate})
	if err != nil {
		return err
	}
	rec, err := inject.NewBundleReconciler(inject.BundleConfig{
		Client: client, Bundle: srv.CA.BundlePEM, Changed: srv.CA.BundleChanged, Resync: time.Minute, Logger: log,
	})
	if err != nil {
		return err
	}
	r.every = append(r.every, ws.Run)
	r.leader["webhook-cabundle"] = rec.Run
	return nil
}

// status is the `certmesh status` section of the Ingress certificates.
func (m *meshFlags) status() map[string]any {
	if m.ctrl == nil {
		return nil
	}
	return map[string]any{"ingressCertificates": m.ctrl.Status()}
}
