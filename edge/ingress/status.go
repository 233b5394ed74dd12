package ingress

import "github.com/certmesh/certmesh/edge"

// CertificateStatus is one Ingress certificate for `certmesh status`: the edge
// Manager's view plus where it lives and who asked for it.
type CertificateStatus struct {
	edge.CertStatus
	// Ingress is the "namespace/name" of the Ingress asking for it.
	Ingress string `json:"ingress"`
	// Secret is the "namespace/name" of the kubernetes.io/tls Secret holding it.
	Secret string `json:"secret"`
}

// Status reports every certificate the controller keeps, as edge.Manager.Status does.
func (c *Controller) Status() []CertificateStatus {
	all := c.mgr.Status()
	out := make([]CertificateStatus, 0, len(all))
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cs := range all {
		out = append(out, CertificateStatus{CertStatus: cs, Ingress: c.owners[cs.Name], Secret: cs.Name})
	}
	return out
}
