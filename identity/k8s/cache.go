package k8s

import (
	"container/list"
	"sync"
	"time"

	"github.com/certmesh/certmesh/identity"
)

// reviewCache remembers TokenReview outcomes (identities and refusals) by
// the SHA-256 of the token, so that a burst of pod starts, or an agent
// retrying, costs the apiserver one review per token per TTL. It holds at
// most size entries, evicting the least recently used; entries never
// outlive the token itself. Tokens are never stored, only their hashes.
type reviewCache struct {
	mu    sync.Mutex
	size  int
	order *list.List // front: most recently used
	items map[[32]byte]*list.Element
}

type cacheEntry struct {
	key     [32]byte
	id      identity.Identity
	err     error
	expires time.Time
}

func newReviewCache(size int) *reviewCache {
	return &reviewCache{size: size, order: list.New(), items: map[[32]byte]*list.Element{}}
}

func (c *reviewCache) get(key [32]byte, now time.Time) (identity.Identity, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return identity.Identity{}, nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.order.Remove(el)
		delete(c.items, key)
		return identity.Identity{}, nil, false
	}
	c.order.MoveToFront(el)
	return e.id, e.err, true
}

func (c *reviewCache) put(key [32]byte, id identity.Identity, err error, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.Remove(el)
		delete(c.items, key)
	}
	for c.order.Len() >= c.size {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.items, old.Value.(*cacheEntry).key)
	}
	c.items[key] = c.order.PushFront(&cacheEntry{key: key, id: id, err: err, expires: expires})
}

func (c *reviewCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
