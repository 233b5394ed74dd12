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
package envoy
