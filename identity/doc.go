// Package identity answers two questions for the CA and the agent: who is
// this caller, and which SPIFFE ID and DNS SANs may it be issued.
//
// Attestors turn what a caller presented (unix socket peer credentials, a
// one-time join token, later a Kubernetes service account token) into an
// Identity. A Chain lets several attestors be tried in order, so the gRPC
// layer needs to know only one Attestor. Policy lives in a registrations
// file that maps unix selectors to SPIFFE IDs; the ID types themselves are
// go-spiffe's, so no second notion of "an ID" exists in certmesh.
package identity
