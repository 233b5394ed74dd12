// Package envoy serves Envoy's Secret Discovery Service (SDS v3,
// envoy.service.secret.v3.SecretDiscoveryService) from the agent's
// certificate cache.
//
// The handler owns neither the socket nor the caller lookup: the agent
// gives it a Source (SVIDs, trust bundle, edge certificates and a change
// signal) and an identity.Attestor, and registers it on a gRPC server whose
// unix listener fills in peer credentials (identity.PeerCredentials).
//
// Resource names a caller may subscribe to:
//
//	default                 the caller's own SVID as a tls_certificate
//	<caller's SPIFFE ID>    the same, under SPIRE's name for it
//	ROOTCA                  the trust bundle as a validation_context
//	spiffe://<trust domain> the same, under SPIRE's name for it
//	<edge certificate>      an ACME certificate listed in the caller's Identity
//
// Any other name ends the stream with InvalidArgument; another workload's
// SPIFFE ID ends it with PermissionDenied. The stream follows the xDS
// state-of-the-world rules (per-stream version and nonce, ACK/NACK, stale
// nonces ignored) as SPIRE's sdsv3 handler does, split into small steps.
//
// An idle stream costs one goroutine, parked in Recv: it handles requests,
// and one watcher per handler delivers source changes to every stream
// through a few short-lived workers (fanout.go). A worker pushes only to a
// stream whose Envoy has answered all but unackedBudget bytes of what it
// was sent, so its Send cannot block and a hung Envoy delays no one; its
// change waits for its next answer. Nonces are random so that an answer
// cannot be forged ahead of the response it claims to have read.
package envoy
