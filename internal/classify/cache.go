package classify

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
)

// cache is a bounded map from query text to Result, evicting with the
// CLOCK algorithm (an approximation of LRU in which a hit only sets a bit,
// so hits take a read lock and do not allocate). It is split into shards to
// keep lock contention low when many sessions classify at once.
type cache struct {
	seed   maphash.Seed
	shards []cacheShard
}

// maxCacheShards bounds the shard count; minShardSize keeps shards large
// enough for CLOCK to tell hot entries from cold ones, so small caches use
// fewer shards (one below 2*minShardSize).
const (
	maxCacheShards = 16
	minShardSize   = 64
)

type cacheShard struct {
	mu    sync.RWMutex
	index map[string]int // guarded by mu: key -> position in slots
	slots []*cacheEntry  // guarded by mu; len grows up to capacity
	hand  int            // guarded by mu: CLOCK hand
	cap   int
}

type cacheEntry struct {
	// key, gen and res are guarded by the shard's mu.
	key string
	gen uint64 // funcSet generation the result was computed with
	res Result
	// ref is the CLOCK reference bit, set by hits under the read lock.
	ref atomic.Bool
}

func newCache(size int) *cache {
	n := max(1, min(size/minShardSize, maxCacheShards))
	c := &cache{seed: maphash.MakeSeed(), shards: make([]cacheShard, n)}
	for i := range c.shards {
		// Spread size exactly so that the total never exceeds it.
		c.shards[i].cap = size / n
		if i < size%n {
			c.shards[i].cap++
		}
		c.shards[i].index = make(map[string]int)
	}
	return c
}

func (c *cache) shard(key string) *cacheShard {
	return &c.shards[maphash.String(c.seed, key)%uint64(len(c.shards))]
}

func (c *cache) get(key string, gen uint64) (Result, bool) {
	sh := c.shard(key)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	i, ok := sh.index[key]
	if !ok {
		return Result{}, false
	}
	e := sh.slots[i]
	if e.gen != gen {
		return Result{}, false
	}
	if !e.ref.Load() {
		e.ref.Store(true)
	}
	return e.res, true
}

func (c *cache) put(key string, gen uint64, res Result) {
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if i, ok := sh.index[key]; ok {
		e := sh.slots[i]
		e.gen, e.res = gen, res
		return
	}
	// Do not keep alive a larger buffer the caller's string may point into.
	key = strings.Clone(key)
	if len(sh.slots) < sh.cap {
		sh.slots = append(sh.slots, &cacheEntry{key: key, gen: gen, res: res})
		sh.index[key] = len(sh.slots) - 1
		return
	}
	// CLOCK: skip (and clear) recently used entries, evict the first that
	// was not used since the hand last passed it.
	for {
		e := sh.slots[sh.hand]
		if e.ref.Load() {
			e.ref.Store(false)
			sh.hand = (sh.hand + 1) % len(sh.slots)
			continue
		}
		delete(sh.index, e.key)
		e.key, e.gen, e.res = key, gen, res
		sh.index[key] = sh.hand
		sh.hand = (sh.hand + 1) % len(sh.slots)
		return
	}
}

// purge empties the cache.
func (c *cache) purge() {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.index = make(map[string]int)
		clear(sh.slots)
		sh.slots = sh.slots[:0]
		sh.hand = 0
		sh.mu.Unlock()
	}
}

// len returns the number of cached texts.
func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += len(sh.index)
		sh.mu.RUnlock()
	}
	return n
}
