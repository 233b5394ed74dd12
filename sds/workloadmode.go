package sds

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/certmesh/certmesh/identity"
)

// Workload mode: the agent runs as a sidecar inside one pod, proves itself
// with the pod's projected ServiceAccount token, and serves that one
// identity to every local caller — the pod, not the process, is the unit of
// identity, as in Istio.

// TokenFile is a Credential read from a file at every use: the kubelet
// rewrites a projected ServiceAccount token before it expires, so the agent
// must never keep an old copy. It never runs out.
type TokenFile struct {
	Path string
}

var _ Credential = TokenFile{}

// maxTokenFileBytes bounds what is read: a ServiceAccount token is a few KiB.
const maxTokenFileBytes = 64 << 10

// Token implements Credential. ok is false when the file cannot be read or
// is empty; the agent retries with backoff and the kubelet may yet write it.
func (f TokenFile) Token() (string, bool) {
	b, err := os.ReadFile(f.Path)
	if err != nil || len(b) == 0 || len(b) > maxTokenFileBytes {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// Reusable reports that the token stays valid across renewals, so the agent
// presents it every time rather than renewing with its SVID: the CA then
// re-checks the pod and the policy on every renewal (a deleted pod or an
// excluded ServiceAccount stops getting certificates), and the DNS names
// of the pod's Services, which only the token attestation can grant, stay
// in the renewed SVID.
func (TokenFile) Reusable() bool { return true }

// reusable is implemented by credentials that may be presented again.
type reusable interface{ Reusable() bool }

// presentsCredentialEachTime tells renew to prefer the bootstrap credential
// over the agent's own SVID.
func presentsCredentialEachTime(c Credential) bool {
	r, ok := c.(reusable)
	return ok && r.Reusable()
}

// ErrNoOwnIdentity means the agent has not obtained its identity yet.
var ErrNoOwnIdentity = errors.New("sds: agent has no identity yet")

// AttestorPod names identities handed out by PodAttestor.
const AttestorPod = "pod"

// PodAttestor gives every local caller the agent's own identity. Use it only
// when the agent's socket is reachable from inside its pod alone (a shared
// emptyDir), which is what makes "same pod" the proof.
type PodAttestor struct {
	Agent *Agent
	// EdgeCertificates are the edge certificates the pod may fetch over SDS
	// (an ingress gateway's Secrets, "namespace/name").
	EdgeCertificates []string
}

var _ identity.Attestor = PodAttestor{}

// Attest implements identity.Attestor for callers on the agent's socket.
func (p PodAttestor) Attest(_ context.Context, cred identity.Credential) (identity.Identity, error) {
	if cred.Peer == nil {
		return identity.Identity{}, identity.ErrNotApplicable
	}
	id, ok := p.Agent.OwnID()
	if !ok {
		return identity.Identity{}, fmt.Errorf("%w (caller %s)", ErrNoOwnIdentity, cred.Peer)
	}
	return identity.Identity{ID: id, Attestor: AttestorPod, EdgeCertificates: p.EdgeCertificates}, nil
}
