package wire

import "github.com/spiffe/go-spiffe/v2/spiffeid"

// ServerIDPath is the SPIFFE ID path of the CA's serving certificate; agents
// authorize the server by it.
const ServerIDPath = "/certmesh/server"

// ServerID is the SPIFFE ID the CA server presents in td.
func ServerID(td spiffeid.TrustDomain) spiffeid.ID {
	id, _ := spiffeid.FromPath(td, ServerIDPath)
	return id
}
