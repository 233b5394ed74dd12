package k8s

import (
	"context"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// podDNSNames are the DNS names a pod may claim: <svc>.<ns>.svc and
// <svc>.<ns>.svc.<cluster domain> for every Service in its namespace whose
// selector matches the pod's labels. A token not bound to a pod gets none.
func (a *Attestor) podDNSNames(ctx context.Context, ns, podName, podUID string) ([]string, error) {
	if podName == "" {
		return nil, nil
	}
	pod, err := a.cfg.Client.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("%w: %s/%s", ErrPodGone, ns, podName)
	case err != nil:
		return nil, fmt.Errorf("%w: get pod: %v", ErrReviewUnavailable, err)
	case podUID != "" && string(pod.UID) != podUID:
		return nil, fmt.Errorf("%w: %s/%s was recreated", ErrPodGone, ns, podName)
	}
	svcs, err := a.cfg.Client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w: list services: %v", ErrReviewUnavailable, err)
	}
	var names []string
	podLabels := labels.Set(pod.Labels)
	for _, s := range svcs.Items {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			continue
		}
		names = append(names, s.Name+"."+ns+".svc", s.Name+"."+ns+".svc."+a.cfg.ClusterDomain)
	}
	slices.Sort(names)
	return names, nil
}
