package envoy

import "sync"

// encodeCache shares encoded secrets between streams. When a rotation wakes
// thousands of streams of the same workload (or all streams for a bundle
// change), each would otherwise PEM- and PKCS#8-encode and marshal the same
// SVID again; with the cache the first stream does it and the rest reuse it.
//
// Entries belong to one generation of the source, identified by the
// channel Source.Changed returns: the first lookup after a change empties
// the cache. The key holds the SVID or bundle pointer as well, so two
// workloads asking for "default" never share an entry, and a source that
// mutates a bundle in place is still safe because it must signal Changed.
type encodeCache struct {
	mu    sync.Mutex
	gen   <-chan struct{}
	items map[cacheKey]item
}

// cacheKey identifies encoded content within one generation: the resource
// name (it is part of the Secret) and the object encoded (nil for edge
// certificates, whose content depends on the name alone).
type cacheKey struct {
	name string
	kind kind
	obj  any
}

// get returns the cached item for k in generation gen, or builds and stores
// it. Building happens outside the lock so streams do not queue behind one
// encoder; two streams may build the same item once, which is harmless.
func (c *encodeCache) get(gen <-chan struct{}, k cacheKey, build func() (item, error)) (item, error) {
	c.mu.Lock()
	if c.gen != gen {
		c.gen, c.items = gen, make(map[cacheKey]item)
	}
	it, ok := c.items[k]
	c.mu.Unlock()
	if ok {
		return it, nil
	}
	it, err := build()
	if err != nil {
		return item{}, err
	}
	c.mu.Lock()
	if c.gen == gen {
		c.items[k] = it
	}
	c.mu.Unlock()
	return it, nil
}
