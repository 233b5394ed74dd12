// Package edge obtains and renews the public certificates an ingress serves, from any
// RFC 8555 ACME CA (Let's Encrypt, ZeroSSL, step-ca, Pebble in tests) through lego.
//
// A [Manager] owns a set of [CertificateSpec]s. For each it keeps the current certificate
// on disk in the layout of a kubernetes.io/tls Secret (Dir/<name>/tls.crt, tls.key,
// ca.crt), decides with the pure [NeedsRenewal] policy when to renew (the CA's ARI window
// first, two thirds of the lifetime otherwise), orders a new one through the configured
// challenge solver, and announces every change on [Manager.Changed] so the SDS side can
// push it at once. Failures back off exponentially per certificate while the old
// certificate keeps being served; a lock per name set keeps two orders for the same names
// from running at once, also across processes sharing Dir.
package edge
