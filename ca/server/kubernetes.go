package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	cak8s "github.com/certmesh/certmesh/ca/k8s"
	"github.com/certmesh/certmesh/ca/leader"
	"github.com/certmesh/certmesh/ca/service"
	"github.com/certmesh/certmesh/ca/store"
	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/identity"
	k8sid "github.com/certmesh/certmesh/identity/k8s"
)

// KubernetesConfig runs the server as one replica of several in a cluster:
// the CA lives in a Secret, every replica signs, and leader-only work (CA
// rotation steps, trust bundle publication, the Ingress controller, the
// webhook's caBundle) runs on the replica holding the Lease.
type KubernetesConfig struct {
	// Client talks to the API server; when nil it is made from REST.
	Client kubernetes.Interface
	// REST is the connection the other clients (metadata-only for the Pod
	// watch, the Gateway API) are made from.
	REST      *rest.Config
	Namespace string // where the CA Secret and the Lease live
	// SecretName and LeaseName default to certmesh-ca and certmesh-leader.
	SecretName string
	LeaseName  string
	// Identity names this replica in the Lease (the pod name).
	Identity string
	// Lease timing (defaults: ca/leader).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// KeepLeaseOnStop simulates a crash in tests: the Lease is not released.
	KeepLeaseOnStop bool
	// DisableBundlePublication turns off the ConfigMap/ClusterTrustBundle
	// publisher (another tool distributes the bundle).
	DisableBundlePublication  bool
	DisableClusterTrustBundle bool
	// IstioRootCert also publishes the bundle as Istio's istio-ca-root-cert
	// (key root-cert.pem) in every namespace, which Istio-injected sidecars
	// mount as their CA root (certmesh server --istio-compat).
	IstioRootCert bool
	// AckPeriod is how often this replica publishes the summary of its
	// agents' bundle acknowledgements for the leader's rotation gate
	// (default cak8s.DefaultAckPeriod); a summary not renewed within three
	// periods stops counting. KeepLeaseOnStop keeps the summary too.
	AckPeriod time.Duration
	// ServiceAccountTokens, when set, attests agents by their ServiceAccount
	// tokens; Client, Metadata (from REST), TrustDomain, Clock and Logger are
	// filled in, and Run keeps the attestor's caches.
	ServiceAccountTokens *k8sid.Config
	// PluginCA, when set, makes the CA the operator's (plugin.go).
	PluginCA *PluginCAConfig
}

// kube is the Kubernetes part of a Server.
type kube struct {
	state    *cak8s.State
	acks     *cak8s.AckExchange
	attestor *k8sid.Attestor
	plugin   *cak8s.PluginWatcher
}

// bootstrapTimeout bounds the apiserver calls New makes.
const bootstrapTimeout = 30 * time.Second

func (c *KubernetesConfig) stateConfig(s *Server) cak8s.StateConfig {
	return cak8s.StateConfig{Client: c.Client, Namespace: c.Namespace, Name: c.SecretName, TrustDomain: s.cfg.TrustDomain, Logger: s.cfg.Logger}
}

// kubernetesClients makes the clients REST allows and the ServiceAccount
// token attestor. It copies cfg.Kubernetes first: New fills in the copy,
// never the caller's.
func (s *Server) kubernetesClients() error {
	if s.cfg.Kubernetes == nil {
		return nil
	}
	k := *s.cfg.Kubernetes
	s.cfg.Kubernetes = &k
	if k.Client == nil && k.REST != nil {
		c, err := kubernetes.NewForConfig(k.REST)
		if err != nil {
			return fmt.Errorf("server: kubernetes: %w", err)
		}
		k.Client = c
	}
	if k.Client == nil || k.Namespace == "" || k.Identity == "" {
		return errors.New("server: kubernetes: Client, Namespace and Identity are required")
	}
	s.kube = &kube{}
	if k.ServiceAccountTokens == nil {
		return nil
	}
	return s.newServiceAccountAttestor(*k.ServiceAccountTokens)
}

func (s *Server) newServiceAccountAttestor(c k8sid.Config) error {
	k := s.cfg.Kubernetes
	c.Client, c.TrustDomain, c.Clock, c.Logger = k.Client, s.cfg.TrustDomain, s.cfg.Clock, s.cfg.Logger
	if c.Metadata == nil && k.REST != nil {
		meta, err := metadata.NewForConfig(k.REST) // the Pod watch asks for pods' metadata only
		if err != nil {
			return fmt.Errorf("server: kubernetes: %w", err)
		}
		c.Metadata = meta
	}
	att, err := k8sid.New(c)
	if err != nil {
		return err
	}
	s.kube.attestor = att
	s.runners = append(s.runners, att.Run)
	s.cfg.Logger.Info("Kubernetes mode", "namespace", k.Namespace, "identity", k.Identity, "token_audience", att.Audience())
	return nil
}

// primeKubernetes copies the shared CA into the local directory before the
// CA is opened, so only the very first replica ever generates one.
func (s *Server) primeKubernetes(caDir string) (found bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), bootstrapTimeout)
	defer cancel()
	return cak8s.Prime(ctx, s.cfg.Kubernetes.stateConfig(s), caDir)
}

// setupKubernetes agrees with the other replicas on one CA and prepares the
// leader election with its built-in leader-only work.
func (s *Server) setupKubernetes() error {
	k := s.cfg.Kubernetes
	if k == nil {
		return nil
	}
	state, err := cak8s.NewState(k.stateConfig(s), s.CA, s.cfg.Clock)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootstrapTimeout)
	defer cancel()
	if err := state.Bootstrap(ctx); err != nil {
		return err
	}
	s.kube.state = state
	if s.Leader, err = s.newLeader(); err != nil {
		return err
	}
	if err := s.Leader.Add("ca-rotation", s.CA.Run); err != nil {
		return err
	}
	if err := s.addPluginWatcher(); err != nil {
		return err
	}
	if k.DisableBundlePublication {
		if k.IstioRootCert {
			return errors.New("server: kubernetes: IstioRootCert needs bundle publication")
		}
		return nil
	}
	pub, err := cak8s.NewPublisher(cak8s.PublisherConfig{
		Client: k.Client, Bundle: s.CA, TrustDomain: s.cfg.TrustDomain,
		DisableClusterTrustBundle: k.DisableClusterTrustBundle,
		IstioRootCert:             k.IstioRootCert, Logger: s.cfg.Logger,
	})
	if err != nil {
		return err
	}
	return s.Leader.Add("trust-bundle", pub.Run)
}

// newLeader builds the leader election on the Lease.
func (s *Server) newLeader() (*leader.Leader, error) {
	k := s.cfg.Kubernetes
	return leader.New(leader.Config{
		Client: k.Client, Namespace: k.Namespace, Name: k.LeaseName, Identity: k.Identity,
		LeaseDuration: k.LeaseDuration, RenewDeadline: k.RenewDeadline, RetryPeriod: k.RetryPeriod,
		KeepLeaseOnStop: k.KeepLeaseOnStop, Clock: s.cfg.Clock, Logger: s.cfg.Logger,
	})
}

// runCA runs the CA's background work: standalone, the rotation timer;
// in Kubernetes, the Secret mirror on every replica and the leader election.
func (s *Server) runCA(ctx context.Context, g *errgroup.Group) {
	if s.kube == nil {
		g.Go(func() error { return s.CA.Run(ctx) })
		return
	}
	g.Go(func() error { return s.kube.state.Run(ctx) })
	g.Go(func() error { return s.kube.acks.Run(ctx) })
	g.Go(func() error { return s.Leader.Run(ctx) })
}

// kubernetesAckGate makes the rotation gate cluster-wide: agents report to
// whichever replica they are connected to, but only the leader rotates, so
// every replica publishes its registry's summary and the leader's gate adds
// the others' to its own (ca/k8s AckExchange). Called once the registry
// exists; standalone, the local registry's gate is used as is.
func (s *Server) kubernetesAckGate(local *service.AckRegistry) (func(roots [32]byte) (bool, int), error) {
	k := s.cfg.Kubernetes
	x, err := cak8s.NewAckExchange(cak8s.AckExchangeConfig{
		Client: k.Client, Namespace: k.Namespace, Identity: k.Identity, Local: local,
		Period: k.AckPeriod, KeepOnStop: k.KeepLeaseOnStop, Clock: s.cfg.Clock, Logger: s.cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	s.kube.acks = x
	return x.Gate, nil
}

// kubernetesStatus is the admin status section of a replica.
func (s *Server) kubernetesStatus() *KubernetesStatus {
	if s.kube == nil {
		return nil
	}
	return &KubernetesStatus{
		Identity: s.Leader.Identity(), Leader: s.Leader.IsLeader(),
		CASecretResourceVersion: s.kube.state.ResourceVersion(),
		Acks:                    s.kube.acks.Status(wire.BundleDigest(s.CA.Roots())),
		PluginCA:                s.pluginStatus(),
	}
}

// nodeStore is where the node register lives: a ConfigMap every replica
// shares in Kubernetes mode (each replica follows it), else DIR/nodes.json.
func (s *Server) nodeStore() identity.NodeStore {
	if k := s.cfg.Kubernetes; k != nil {
		ns := &cak8s.NodeStore{Client: k.Client, Namespace: k.Namespace, Logger: s.cfg.Logger}
		s.runners = append(s.runners, func(ctx context.Context) error {
			return ns.Watch(ctx, func() {
				if err := s.Nodes.Reload(); err != nil {
					s.cfg.Logger.Error("node register: reload failed; the previous one stays in force", "error", err)
				}
			})
		})
		return ns
	}
	return identity.NodesFile(store.File{Path: filepath.Join(s.cfg.Dir, NodesFile), Perm: 0o600})
}
