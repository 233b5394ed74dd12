package identity

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// AuthTypePeerCred is the AuthType of PeerAuthInfo.
const AuthTypePeerCred = "unix-peercred"

// errNotUnixConn is returned by the server handshake for non-unix
// connections: peer credentials only exist on unix sockets, and accepting
// the connection without them would turn every caller anonymous.
var errNotUnixConn = errors.New("identity: peer credentials need a unix socket connection")

// PeerAuthInfo is the credentials.AuthInfo attached to each connection
// accepted through PeerCredentials.
type PeerAuthInfo struct {
	credentials.CommonAuthInfo
	Cred PeerCred
}

// AuthType implements credentials.AuthInfo.
func (PeerAuthInfo) AuthType() string { return AuthTypePeerCred }

// PeerCredentials returns gRPC transport credentials for a unix socket
// listener. The transport is not encrypted (the socket never leaves the
// host); what it adds is the kernel-verified uid/gid/pid of the caller, read
// once per connection with SO_PEERCRED.
func PeerCredentials() credentials.TransportCredentials {
	return peerCreds{}
}

type peerCreds struct{}

var _ credentials.TransportCredentials = peerCreds{}

// ClientHandshake passes the connection through unchanged: the client has
// nothing to prove about the server beyond having dialled its socket path.
func (peerCreds) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, PeerAuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

// ServerHandshake reads the caller's peer credentials.
func (peerCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("%w: got %T", errNotUnixConn, conn)
	}
	cred, err := readPeerCred(uc)
	if err != nil {
		return nil, nil, err
	}
	info := PeerAuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity},
		Cred:           cred,
	}
	return conn, info, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: AuthTypePeerCred}
}

func (p peerCreds) Clone() credentials.TransportCredentials { return p }

// OverrideServerName is deprecated in gRPC and meaningless here.
func (peerCreds) OverrideServerName(string) error { return nil }

func readPeerCred(uc *net.UnixConn) (PeerCred, error) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return PeerCred{}, fmt.Errorf("identity: peer credentials: %w", err)
	}
	var (
		ucred   *unix.Ucred
		sockErr error
	)
	err = raw.Control(func(fd uintptr) {
		ucred, sockErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err == nil {
		err = sockErr
	}
	if err != nil {
		return PeerCred{}, fmt.Errorf("identity: read SO_PEERCRED: %w", err)
	}
	return PeerCred{UID: ucred.Uid, GID: ucred.Gid, PID: ucred.Pid}, nil
}

// PeerCredFromContext returns the peer credentials of the gRPC caller, if
// its connection was accepted through PeerCredentials.
func PeerCredFromContext(ctx context.Context) (PeerCred, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return PeerCred{}, false
	}
	info, ok := p.AuthInfo.(PeerAuthInfo)
	if !ok {
		return PeerCred{}, false
	}
	return info.Cred, true
}

// PeerAttestor grants identities to unix socket callers according to the
// registrations file.
type PeerAttestor struct {
	// Registrations is read at every attestation: a *RegistrationsFile's
	// reload applies from the next caller on.
	Registrations RegistrationsSource
	// Node, when set, tells which node agent the attestor serves for, waiting
	// until it is known (an agent learns its ID when it joins). Only the
	// entries that node may serve are matched: with entries scoped to other
	// nodes, one selector can mean different workloads on different nodes.
	Node func(context.Context) (spiffeid.ID, error)

	scoped atomic.Pointer[scopedRegistrations] // the node's share, once Node is known
}

// scopedRegistrations is from.ForNode(the node), kept while from is in force.
type scopedRegistrations struct {
	from, node *Registrations
}

var _ Attestor = (*PeerAttestor)(nil)

// Attest implements Attestor.
func (a *PeerAttestor) Attest(ctx context.Context, cred Credential) (Identity, error) {
	if cred.Peer == nil {
		return Identity{}, ErrNotApplicable
	}
	regs, err := a.registrations(ctx)
	if err != nil {
		return Identity{}, err
	}
	e, ok := regs.MatchPeer(*cred.Peer)
	if !ok {
		return Identity{}, fmt.Errorf("%w: uid=%d gid=%d", ErrNoRegistration, cred.Peer.UID, cred.Peer.GID)
	}
	return Identity{ID: e.ID, DNSNames: e.DNSNames, EdgeCertificates: e.EdgeCertificates, Attestor: AttestorUnix}, nil
}

// registrations is what callers are matched against: all of them, or the
// node's share once Node has said which node this is.
func (a *PeerAttestor) registrations(ctx context.Context) (*Registrations, error) {
	var all *Registrations
	if a.Registrations != nil {
		all = a.Registrations.Current()
	}
	if a.Node == nil || all == nil {
		return all, nil
	}
	if s := a.scoped.Load(); s != nil && s.from == all {
		return s.node, nil
	}
	node, err := a.Node(ctx)
	if err != nil {
		return nil, fmt.Errorf("identity: which node this is is not known yet: %w", err)
	}
	s := &scopedRegistrations{from: all, node: all.ForNode(node)}
	a.scoped.Store(s)
	return s.node, nil
}
