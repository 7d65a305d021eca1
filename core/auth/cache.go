package auth

import (
	"container/list"
	"sync"
	"time"
)

// cache is a bounded LRU of lookup results with a fixed time to live, for
// positive and negative results alike.
type cache[K comparable, V any] struct {
	mu    sync.Mutex
	ttl   time.Duration
	max   int
	now   func() time.Time
	order *list.List // front = most recently used; elements hold *cacheEntry
	items map[K]*list.Element
}

type cacheEntry[K comparable, V any] struct {
	key     K
	value   V
	expires time.Time
}

func newCache[K comparable, V any](max int, ttl time.Duration, now func() time.Time) *cache[K, V] {
	if max < 1 {
		max = 1
	}
	return &cache[K, V]{ttl: ttl, max: max, now: now, order: list.New(), items: make(map[K]*list.Element, max)}
}

// lookup returns the entry for k and whether it is still fresh. Expired
// entries stay (until the LRU evicts them) so a caller can fall back on
// them when the source of truth is unreachable.
func (c *cache[K, V]) lookup(k K) (v V, fresh, found bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return v, false, false
	}
	e := el.Value.(*cacheEntry[K, V])
	c.order.MoveToFront(el)
	return e.value, c.now().Before(e.expires), true
}

func (c *cache[K, V]) put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp := c.now().Add(c.ttl)
	if el, ok := c.items[k]; ok {
		e := el.Value.(*cacheEntry[K, V])
		e.value, e.expires = v, exp
		c.order.MoveToFront(el)
		return
	}
	for c.order.Len() >= c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*cacheEntry[K, V]).key)
	}
	c.items[k] = c.order.PushFront(&cacheEntry[K, V]{key: k, value: v, expires: exp})
}

func (c *cache[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
