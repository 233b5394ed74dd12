package k8s

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/certmesh/certmesh/identity"
)

// NodesConfigMap holds the node register (evictions and bans) that every
// replica shares, one key per node, so that `certmesh node evict` on any
// replica is refused on all of them from their next request.
const NodesConfigMap = "certmesh-nodes"

// NodeStore is identity.NodeStore on a ConfigMap in the CA's namespace. Each
// record is its own key, written with a merge patch: two replicas saving
// different nodes never overwrite each other.
type NodeStore struct {
	Client    kubernetes.Interface
	Namespace string
	// Timeout bounds one read or write (default 10 s).
	Timeout time.Duration
	Logger  *slog.Logger
}

var _ identity.NodeStore = (*NodeStore)(nil)

// nodeKey is a ConfigMap key for id: keys allow only [-._a-zA-Z0-9].
func nodeKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "node-" + hex.EncodeToString(sum[:16])
}

func (s *NodeStore) ctx() (context.Context, context.CancelFunc) {
	t := s.Timeout
	if t <= 0 {
		t = 10 * time.Second
	}
	return context.WithTimeout(context.Background(), t)
}

// LoadNodes reads every record; no ConfigMap yet is an empty register.
func (s *NodeStore) LoadNodes() ([]identity.Node, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	cm, err := s.Client.CoreV1().ConfigMaps(s.Namespace).Get(ctx, NodesConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("k8s: nodes: %w", err)
	}
	return decodeNodes(cm)
}

func decodeNodes(cm *corev1.ConfigMap) ([]identity.Node, error) {
	var out []identity.Node
	for key, v := range cm.Data {
		var n identity.Node
		if err := json.Unmarshal([]byte(v), &n); err != nil {
			return nil, fmt.Errorf("k8s: nodes: ConfigMap %s/%s key %s: %w", cm.Namespace, cm.Name, key, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// SaveNode writes one record, creating the ConfigMap on first use.
func (s *NodeStore) SaveNode(n identity.Node) error {
	rec, err := json.Marshal(n)
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"data": map[string]string{nodeKey(n.ID): string(rec)}})
	if err != nil {
		return err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	cms := s.Client.CoreV1().ConfigMaps(s.Namespace)
	for range 3 {
		_, err = cms.Patch(ctx, NodesConfigMap, types.MergePatchType, patch, metav1.PatchOptions{})
		if !apierrors.IsNotFound(err) {
			break
		}
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: NodesConfigMap, Namespace: s.Namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "certmesh"}},
			Data:       map[string]string{nodeKey(n.ID): string(rec)},
		}, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			break // created, or failed
		}
	}
	if err != nil {
		return fmt.Errorf("k8s: nodes: save %s: %w", n.ID, err)
	}
	return nil
}

// Watch calls changed once it follows the ConfigMap, then whenever the
// ConfigMap changes (another replica's eviction), until ctx ends.
func (s *NodeStore) Watch(ctx context.Context, changed func()) error {
	f := informers.NewSharedInformerFactoryWithOptions(s.Client, 10*time.Minute, informers.WithNamespace(s.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", NodesConfigMap).String()
		}))
	inf := f.Core().V1().ConfigMaps().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { changed() },
		UpdateFunc: func(any, any) { changed() },
	}); err != nil {
		return fmt.Errorf("k8s: nodes: %w", err)
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	// Once synced, read the register again: a change made between the
	// first load and the watch's start is not missed.
	if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		changed()
	}
	<-ctx.Done()
	return nil
}
