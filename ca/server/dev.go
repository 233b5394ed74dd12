package server

import (
	"context"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/identity"
	"github.com/certmesh/certmesh/sds"
)

// The local agent lives here rather than in cmd because it is wired from the
// server's own parts (its address, roots, join tokens, registrations file and
// edge manager): composed once, next to them, `certmesh dev` is this package's
// Config with LocalAgent set and nothing else to repeat.

// AgentSocketName is the local agent's socket inside the state directory.
const AgentSocketName = "agent.sock"

// DevNodePath is the path of the local agent's node ID.
const DevNodePath = "/certmesh/node/dev"

// LocalAgentConfig runs a node agent in the server's process (`certmesh
// dev`): it joins with a join token made on the spot, serves the workloads
// the registrations file places on its node, and the edge certificates.
type LocalAgentConfig struct {
	// Socket is the Workload API / SDS socket (default Dir/agent.sock).
	Socket string
}

// LocalAgent is the running local agent.
type LocalAgent struct {
	*sds.Agent
	// Socket is the absolute path of the agent's socket.
	Socket string
}

// LocalAgent is the in-process agent (nil unless cfg.LocalAgent is set).
func (s *Server) LocalAgent() *LocalAgent { return s.local }

func (a *LocalAgent) isReady() bool {
	select {
	case <-a.Ready():
		return true
	default:
		return false
	}
}

// buildLocalAgent makes the agent and its socket's server; the CA's listener
// is bound by now, so the agent knows where to dial.
func (s *Server) buildLocalAgent() error {
	lc := s.cfg.LocalAgent
	if lc == nil {
		return nil
	}
	socket := lc.Socket
	if socket == "" {
		socket = filepath.Join(s.cfg.Dir, AgentSocketName)
	}
	socket, err := filepath.Abs(socket)
	if err != nil {
		return err
	}
	nodeID, err := spiffeid.FromPath(s.cfg.TrustDomain, DevNodePath)
	if err != nil {
		return err
	}
	token, _, err := s.Tokens.Create(nodeID, time.Minute)
	if err != nil {
		return err
	}
	agentCfg := sds.Config{
		TrustDomain: s.cfg.TrustDomain, ServerAddr: s.Addr(), TrustBundle: s.CA.Roots(),
		Credential: sds.NewJoinToken(token), SVIDTTL: s.cfg.CA.DefaultTTL,
		Logger: s.cfg.Logger, Registerer: s.cfg.Registerer,
	}
	var attestor identity.Attestor = identity.Chain(nil)
	if s.regs != nil {
		// Entries scoped to other nodes are not this machine's: the agent
		// places them as a node agent does, by the ID it joined as.
		agentCfg.Workloads = workloadIDs(s.regs.file.Current())
		agentCfg.WorkloadOn = identity.Placement(s.regs.file)
		attestor = &identity.PeerAttestor{Registrations: s.regs.file, Node: func(context.Context) (spiffeid.ID, error) { return nodeID, nil }}
	}
	if s.edge != nil {
		agentCfg.Edge = edgeSource{s.edge}
	}
	agent, err := sds.New(agentCfg)
	if err != nil {
		return err
	}
	s.local = &LocalAgent{Agent: agent, Socket: socket}
	if s.regs != nil {
		s.regs.onChange = append(s.regs.onChange, func(r *identity.Registrations) { agent.SetWorkloads(workloadIDs(r)) })
	}
	s.runners = append(s.runners, agent.Run, func(ctx context.Context) error {
		return sds.ServeEndpoints(ctx, sds.EndpointsConfig{Socket: socket, Agent: agent, Attestor: attestor, Logger: s.cfg.Logger, Registerer: s.cfg.Registerer})
	})
	return nil
}

// workloadIDs are the identities of regs' entries.
func workloadIDs(regs *identity.Registrations) []spiffeid.ID {
	var ids []spiffeid.ID
	for _, e := range regs.Entries() {
		ids = append(ids, e.ID)
	}
	return ids
}
