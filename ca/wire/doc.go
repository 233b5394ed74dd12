// Package wire is the contract between the node agent (sds) and the CA
// server (ca/service): the names both sides must agree on, and nothing else.
//
// It holds the SPIFFE ID the server presents, the gRPC metadata keys of the
// requests and trailers, the digest that names a trust bundle, and the
// bundle acknowledgement service (its message, descriptor and client call)
// and the upstream authority service a downstream server calls.
// How the server authenticates, signs and gates rotation stays in
// ca/service; how the agent keeps SVIDs fresh stays in sds.
//
// wire imports only the standard library, go-spiffe, gRPC and protobuf, so
// an agent built against it carries no server code.
package wire
