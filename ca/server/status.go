package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/admin"
	cak8s "github.com/certmesh/certmesh/ca/k8s"
	"github.com/certmesh/certmesh/edge"
	"github.com/certmesh/certmesh/edge/ingress"
	"github.com/certmesh/certmesh/identity"
)

// Status is what the admin socket serves and what `certmesh status` and
// `certmesh diagnose` decode: one type on both sides of the socket, so the
// JSON keys cannot drift apart. A section is absent when its part is off.
type Status struct {
	CA   ca.Status         `json:"ca"`
	Edge []EdgeCertificate `json:"edge,omitempty"`
	// Ingress holds the certificates of annotated Ingresses and Gateways; only
	// the leader replica, which orders them, lists any.
	Ingress       []ingress.CertificateStatus   `json:"ingressCertificates,omitempty"`
	Registrations *identity.RegistrationsStatus `json:"registrations,omitempty"`
	Kubernetes    *KubernetesStatus             `json:"kubernetes,omitempty"`
	// Nodes are the node agents (and identities that joined with a token)
	// with their state and last-seen time.
	Nodes []identity.Node `json:"nodes,omitempty"`
}

// EdgeCertificate is one edge certificate in Status.
type EdgeCertificate struct {
	edge.CertStatus
	// ErrorType is edge.ErrorType of the last error. The server does not fill
	// it yet (that would add a key to `certmesh status -o json`); diagnose
	// falls back to the error's text without it.
	ErrorType string `json:"errorType,omitempty"`
}

// KubernetesStatus is a replica's view of the cluster.
type KubernetesStatus struct {
	Identity                string                  `json:"identity"`
	Leader                  bool                    `json:"leader"`
	CASecretResourceVersion string                  `json:"caSecretResourceVersion"`
	Acks                    cak8s.AckExchangeStatus `json:"acks"`
	// PluginCA is the plug-in CA Secret's last result (on the leader).
	PluginCA *cak8s.PluginStatus `json:"pluginCA,omitempty"`
}

// Status reports every part the server runs.
func (s *Server) Status() Status {
	st := Status{CA: s.CA.Status(), Kubernetes: s.kubernetesStatus(), Nodes: s.Nodes.List()}
	if s.edge != nil {
		for _, c := range s.edge.Status() {
			st.Edge = append(st.Edge, EdgeCertificate{CertStatus: c})
		}
	}
	if s.ingress != nil {
		st.Ingress = s.ingress.Status()
	}
	if s.regs != nil {
		rs := s.regs.file.Status()
		st.Registrations = &rs
	}
	return st
}

// ErrNotLeader refuses an operator's CA rotation on a replica that does not
// hold the Lease: rotation state is the leader's to write, and a follower's
// write could race with the leader's next step and be lost.
var ErrNotLeader = errors.New("server: this replica is not the leader")

// Rotate starts a CA rotation. In Kubernetes mode only the leader does; a
// follower's refusal names the leader to run it on.
func (s *Server) Rotate() (ca.AuthorityState, error) {
	if err := s.leaderOnly("certmesh ca rotate"); err != nil {
		return ca.AuthorityState{}, err
	}
	if err := s.pluggedRefusesRotate(); err != nil {
		return ca.AuthorityState{}, err
	}
	return s.CA.Rotate()
}

// ForceRotate activates a prepared root that the acknowledgement gate
// holds (`certmesh ca rotate --force`); like Rotate, on the leader only.
func (s *Server) ForceRotate() (ca.ForcedActivation, error) {
	if err := s.leaderOnly("certmesh ca rotate --force"); err != nil {
		return ca.ForcedActivation{}, err
	}
	return s.CA.ForceActivate()
}

// leaderOnly refuses an operator's rotation command on a follower, naming
// the leader to run command on.
func (s *Server) leaderOnly(command string) error {
	if s.Leader == nil || s.Leader.IsLeader() {
		return nil
	}
	leader := s.Leader.Current()
	if leader == "" {
		leader = "not known yet"
	}
	return fmt.Errorf("%w (this is %s; the leader is %s): run `%s` on the leader's pod", ErrNotLeader, s.Leader.Identity(), leader, command)
}

// CreateJoinToken makes a one-time join token for id; a banned node gets
// none (it would be refused at redemption anyway).
func (s *Server) CreateJoinToken(id spiffeid.ID, ttl time.Duration) (string, time.Time, error) {
	if s.Nodes.Banned(id) {
		return "", time.Time{}, fmt.Errorf("%w: %s (evict it to lift the ban)", identity.ErrNodeBanned, id)
	}
	return s.Tokens.Create(id, ttl)
}

// SetNode evicts or bans a node agent. Its SVIDs are refused from the next
// request on; in Kubernetes mode the register is this replica's.
func (s *Server) SetNode(id spiffeid.ID, action string) (identity.Node, error) {
	switch action {
	case "evict":
		return s.Nodes.Evict(id)
	case "ban":
		return s.Nodes.Ban(id)
	}
	return identity.Node{}, fmt.Errorf("server: unknown node action %q", action)
}

// adminAPI is the Server as the admin socket's Backend.
type adminAPI struct{ s *Server }

var _ admin.Backend = adminAPI{}

func (a adminAPI) CreateJoinToken(id spiffeid.ID, ttl time.Duration) (string, time.Time, error) {
	return a.s.CreateJoinToken(id, ttl)
}

func (a adminAPI) Rotate() (any, error) { return a.s.Rotate() }

func (a adminAPI) ForceRotate() (any, error) { return a.s.ForceRotate() }

func (a adminAPI) Status() any { return a.s.Status() }

func (a adminAPI) Nodes() any { return a.s.Nodes.List() }

func (a adminAPI) SetNode(id spiffeid.ID, action string) (any, error) { return a.s.SetNode(id, action) }
