package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/certmesh/certmesh/ca"
	cak8s "github.com/certmesh/certmesh/ca/k8s"
)

// PluginCAConfig plugs an operator's CA in from a Secret in the server's
// namespace (Istio's cacerts or a kubernetes.io/tls Secret with ca.crt).
// With no CA yet it is the first authority and signs at once; otherwise
// the leader rolls every change in (ca.CA.Plug): a new root is prepared
// and activated after the overlap and the gate, a new CA certificate under
// the same root signs at once. Followers load the CA Secret as always.
type PluginCAConfig struct {
	Secret string
	Format cak8s.PluginFormat // default auto
}

func (s *Server) pluginConfig() cak8s.PluginConfig {
	k := s.cfg.Kubernetes
	return cak8s.PluginConfig{Client: k.Client, Namespace: k.Namespace, Name: k.PluginCA.Secret, Format: k.PluginCA.Format,
		TrustDomain: s.cfg.TrustDomain, Clock: s.cfg.Clock, Logger: s.cfg.Logger}
}

// pluginFirstImport is the plug-in CA as the CA's first authority when the
// cluster has no CA yet (caFound false): every replica reads the same
// Secret and so derives the same authority ID from its root; the CA
// Secret's create-once race keeps one replica's copy. It refuses to start
// without a valid plug-in Secret rather than make a CA of its own.
func (s *Server) pluginFirstImport(caFound bool, imp *ca.ImportParams) (*ca.ImportParams, error) {
	k := s.cfg.Kubernetes
	if k == nil || k.PluginCA == nil || caFound {
		return imp, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootstrapTimeout)
	defer cancel()
	a, err := cak8s.ReadPlugin(ctx, s.pluginConfig())
	if err != nil {
		return nil, err
	}
	s.cfg.Logger.Info("no CA yet: starting with the plug-in CA", "secret", k.Namespace+"/"+k.PluginCA.Secret, "authority", a.ID)
	return a.ImportParams()
}

// addPluginWatcher makes the plug-in Secret's watch leader-only work.
func (s *Server) addPluginWatcher() error {
	k := s.cfg.Kubernetes
	if k.PluginCA == nil {
		return nil
	}
	w, err := cak8s.NewPluginWatcher(s.pluginConfig(), s.CA)
	if err != nil {
		return err
	}
	s.kube.plugin = w
	return s.Leader.Add("plugin-ca", w.Run)
}

// pluginStatus is the plug-in watcher's last result (nil without one).
func (s *Server) pluginStatus() *cak8s.PluginStatus {
	if s.kube.plugin == nil {
		return nil
	}
	st := s.kube.plugin.Status()
	return &st
}

// ErrPluggedCA refuses `certmesh ca rotate --root` while a plug-in CA is
// configured: the roots are the operator's, changed by replacing the
// Secret; a root of certmesh's own would retire the plugged one, and the
// watcher would plug it back in once it had left.
var ErrPluggedCA = errors.New("server: the CA is plugged in from a Secret")

func (s *Server) pluggedRefusesRotate() error {
	k := s.cfg.Kubernetes
	if k == nil || k.PluginCA == nil {
		return nil
	}
	return fmt.Errorf("%w (%s/%s): rotate it by replacing the Secret", ErrPluggedCA, k.Namespace, k.PluginCA.Secret)
}
