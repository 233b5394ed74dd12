package ingress

import "github.com/certmesh/certmesh/edge"

// CertificateStatus is one certificate for `certmesh status`: the edge Manager's view
// plus where it lives and who asked for it.
type CertificateStatus struct {
	edge.CertStatus
	// Ingress, Gateway or ListenerSet is the "namespace/name" of the object asking
	// for it.
	Ingress     string `json:"ingress,omitempty"`
	Gateway     string `json:"gateway,omitempty"`
	ListenerSet string `json:"listenerSet,omitempty"`
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
		st := CertificateStatus{CertStatus: cs, Secret: cs.Name}
		switch owner := c.owners[cs.Name]; owner.Kind {
		case KindIngress:
			st.Ingress = owner.Ref()
		case KindGateway:
			st.Gateway = owner.Ref()
		case KindListenerSet:
			st.ListenerSet = owner.Ref()
		}
		out = append(out, st)
	}
	return out
}
