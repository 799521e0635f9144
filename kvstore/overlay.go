package kvstore

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/compactkv/compactkv/changelog"
)

// overlay holds this store's own acknowledged writes until the tail has
// applied them (or something newer) to the cache file. It is what makes a
// Get right after Put return the new value without writing the file out of
// offset order: the file is written only by the applier, in offset order,
// together with the offsets it came from.
type overlay struct {
	mu      sync.RWMutex
	parts   []map[string]ovEntry // per partition
	applied []int64              // per partition: next offset the file holds
	n       atomic.Int64         // entries in parts, for a lock-free fast path
	empty   chan struct{}        // closed once n is 0; nil while nobody waits
}

type ovEntry struct {
	offset int64
	value  []byte // nil: deleted
}

func newOverlay(partitions int32, next map[int32]int64) *overlay {
	o := &overlay{parts: make([]map[string]ovEntry, partitions), applied: make([]int64, partitions)}
	for p := range o.parts {
		o.parts[p] = map[string]ovEntry{}
		o.applied[p] = next[int32(p)]
	}
	return o
}

// put records an acknowledged write at offset, unless the applier has already
// passed that offset (then the file has it, or something newer).
func (o *overlay) put(p int32, key string, offset int64, value []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if offset < o.applied[p] {
		return
	}
	if cur, ok := o.parts[p][key]; ok && cur.offset > offset {
		return
	}
	if _, ok := o.parts[p][key]; !ok {
		o.n.Add(1)
	}
	o.parts[p][key] = ovEntry{offset: offset, value: value}
}

// get returns the overlay's entry for key in partition p.
func (o *overlay) get(p int32, key string) (ovEntry, bool) {
	if o.n.Load() == 0 {
		return ovEntry{}, false
	}
	o.mu.RLock()
	e, ok := o.parts[p][key]
	o.mu.RUnlock()
	return e, ok
}

// advanceLocked records that the file now holds partition p up to next,
// and drops the entries it covers except those in keep, which are not in the
// file yet. The caller holds o.mu.
func (o *overlay) advanceLocked(p int32, next int64, keep []ownWrite) {
	if next <= o.applied[p] {
		return
	}
	o.applied[p] = next
	for k, e := range o.parts[p] {
		if e.offset < next && !slices.ContainsFunc(keep, func(w ownWrite) bool {
			return w.part == p && w.key == k && w.offset == e.offset
		}) {
			o.deleteLocked(p, k)
		}
	}
}

// resetLocked records that the file holds partition p up to next, whatever
// it held before (a rebuilt file), and drops the entries it covers. The
// caller holds o.mu.
func (o *overlay) resetLocked(p int32, next int64) {
	o.applied[p] = next
	for k, e := range o.parts[p] {
		if e.offset < next {
			o.deleteLocked(p, k)
		}
	}
}

// dropLocked drops the entries ws, now in the file, unless a newer write of
// their key replaced them meanwhile. The caller holds o.mu.
func (o *overlay) dropLocked(ws []ownWrite) {
	for _, w := range ws {
		if e, ok := o.parts[w.part][w.key]; ok && e.offset == w.offset {
			o.deleteLocked(w.part, w.key)
		}
	}
}

func (o *overlay) deleteLocked(p int32, key string) {
	delete(o.parts[p], key)
	if o.n.Add(-1) == 0 && o.empty != nil {
		close(o.empty)
		o.empty = nil
	}
}

// drained returns a channel closed once the overlay holds no entry: every
// own write acknowledged so far is in the file.
func (o *overlay) drained() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n.Load() == 0 {
		return closedChan
	}
	if o.empty == nil {
		o.empty = make(chan struct{})
	}
	return o.empty
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// ownWrite is an overlay entry on its way into the cache file.
type ownWrite struct {
	part   int32
	key    string
	offset int64
	value  []byte // nil: deleted
}

// unseenLocked returns the entries the batches pass (offset below the
// batch's Next) without carrying a record of the same key at or after the
// entry's offset. The caller holds o.mu.
func (o *overlay) unseenLocked(bs []changelog.Batch) []ownWrite {
	if o.n.Load() == 0 {
		return nil
	}
	var out []ownWrite
	for _, b := range bs {
		m := o.parts[b.Partition]
		if len(m) == 0 {
			continue
		}
		seen := map[string]bool{}
		for _, r := range b.Records {
			if e, ok := m[string(r.Key)]; ok && r.Offset >= e.offset {
				seen[string(r.Key)] = true
			}
		}
		for k, e := range m {
			if e.offset < b.Next && !seen[k] {
				out = append(out, ownWrite{part: b.Partition, key: k, offset: e.offset, value: e.value})
			}
		}
	}
	return out
}

// withPrefix returns copies of the entries whose keys start with prefix and
// sort after after.
func (o *overlay) withPrefix(prefix, after string) map[string]ovEntry {
	if o.n.Load() == 0 {
		return nil
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	out := map[string]ovEntry{}
	for _, m := range o.parts {
		for k, e := range m {
			if strings.HasPrefix(k, prefix) && k > after {
				out[k] = e
			}
		}
	}
	return out
}
