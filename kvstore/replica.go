package kvstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/compactkv/compactkv/changelog"
)

// replica is this store's copy of one partition of the topic: its bucket in
// the cache file, its checkpoint (the next offset the file holds), the
// store's own acknowledged writes the file does not hold yet, and its state
// and freshness. The store is a set of replicas, one per partition; each
// changes only under its own lock, so one partition's restore, follower or
// writes never wait on another's.
//
// Own writes are what make a Get right after Put return the new value
// without writing the file out of offset order: the file is written only by
// the applier, in offset order, together with the offsets it came from;
// until then the write waits here.
type replica struct {
	p      int32
	bucket []byte

	mu      sync.RWMutex
	own     map[string]ovEntry // own acknowledged writes not in the file yet
	applied int64              // next offset the file holds (the checkpoint)
	empty   chan struct{}      // closed once own is empty; nil while nobody waits
	nOwn    atomic.Int64       // len(own), for a lock-free fast path

	state      PartitionState
	stallBy    stallCause    // why stalled, while it is
	end        int64         // end offset last seen
	quietEnd   int64         // a restore found no visible record between applied and this end: reached as if applied
	caughtUpAt time.Time     // the file held everything the partition held then
	marked     time.Time     // the caughtUpAt last recorded in the file (current/<p>)
	obs        []endObs      // end offsets seen and not reached yet, oldest first
	err        error         // why stalled or stopped
	moved      chan struct{} // closed when applied or state changes; nil while nobody waits

	// Partitioned mode (group.go); in global mode every partition is
	// owned, followed and warm.
	role     PartitionRole
	owner    string // the owner's advertised address, "" if none
	followed bool   // the follower reads it (owned or standby)
	warm     bool   // caught up since it was last taken on: served if owned
	target   int64  // a delta through the follower ends here; 0 if none
	promoted bool   // a standby made owner: applyView sets target to the listed end
	incoming bool   // a standby the group is moving to this member (changelog.Assignment.Incoming)
	gen      uint64 // counts the times the partition was taken on or given up
	// handover orders a background rebuild's swap of the bucket against
	// the follower taking the partition on or giving it up (never held
	// while waiting on the network; r.mu is taken inside it, not around).
	handover sync.Mutex
}

func newReplica(p int32) *replica {
	return &replica{p: p, bucket: partBucket(p), own: map[string]ovEntry{}, followed: true, warm: true}
}

// beginDelta starts bringing the partition up to date through the
// follower, from the checkpoint next to end (listed at at), after the
// file's record that it was current at current passed the guards. The
// caller holds r.mu.
func (r *replica) beginDelta(next, end int64, current, at time.Time) {
	r.applied, r.obs, r.quietEnd = next, r.obs[:0], 0
	r.end = max(next, end)
	r.caughtUpAt, r.marked = current, current
	if next >= end {
		r.warm, r.target, r.state, r.caughtUpAt = true, 0, PartitionFollowing, at
		return
	}
	r.target, r.state = end, PartitionRestoring
}

// reached is the offset below which the cache holds every visible record
// of the partition. The caller holds r.mu.
func (r *replica) reached() int64 { return max(r.applied, r.quietEnd) }

// signalLocked wakes those waiting in waitReached. The caller holds r.mu
// for writing and has changed what they wait on.
func (r *replica) signalLocked() {
	if r.moved != nil {
		close(r.moved)
		r.moved = nil
	}
}

// errWoken is waitReached's answer when wake fired first.
var errWoken = errors.New("woken")

// waitReached returns once reads of the partition show every visible
// record below next, or with ctx's error, or with the partition's error
// once it has stopped (ErrClosed after Close), or errWoken when wake
// fires (nil: never).
func (r *replica) waitReached(ctx context.Context, next int64, wake <-chan struct{}) error {
	for {
		r.mu.Lock()
		if r.reached() >= next {
			r.mu.Unlock()
			return nil
		}
		if r.role == RoleNone { // partitioned mode: taken away (or never given)
			owner := r.owner
			r.mu.Unlock()
			return &NotOwnerError{Partition: r.p, Owner: owner}
		}
		if r.state == PartitionStopped {
			err, at := r.err, r.applied
			r.mu.Unlock()
			if errors.Is(err, ErrClosed) {
				return err
			}
			return fmt.Errorf("partition %d stopped at offset %d: %w: %w", r.p, at, ErrStopped, err)
		}
		if r.moved == nil {
			r.moved = make(chan struct{})
		}
		ch := r.moved
		r.mu.Unlock()
		select {
		case <-ch:
		case <-wake:
			return errWoken
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

type ovEntry struct {
	offset int64
	value  []byte // nil: deleted
}

// ownWrite is an own write on its way into the cache file.
type ownWrite struct {
	key    string
	offset int64
	value  []byte // nil: deleted
}

// putOwn records an own write the broker acknowledged at offset, unless the
// file already holds that offset (then it holds the write, or something
// newer).
func (r *replica) putOwn(key string, offset int64, value []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if offset < r.applied || !r.followed { // not followed: the follower would never drop it
		return
	}
	cur, ok := r.own[key]
	if ok && cur.offset > offset {
		return
	}
	if !ok {
		r.nOwn.Add(1)
	}
	r.own[key] = ovEntry{offset: offset, value: value}
}

// getOwn returns the own write of key that the file does not hold yet.
func (r *replica) getOwn(key string) (ovEntry, bool) {
	if r.nOwn.Load() == 0 {
		return ovEntry{}, false
	}
	r.mu.RLock()
	e, ok := r.own[key]
	r.mu.RUnlock()
	return e, ok
}

// ownWithPrefix adds to out the own writes whose keys start with prefix and
// sort after after.
func (r *replica) ownWithPrefix(prefix, after string, out map[string]ovEntry) {
	if r.nOwn.Load() == 0 {
		return
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for k, e := range r.own {
		if strings.HasPrefix(k, prefix) && k > after {
			out[k] = e
		}
	}
}

// unseen returns the own writes that b passes (offset below b.Next) without
// carrying a record of their key at or after their offset: compaction took
// them before the follower read them, and they must go into the file with b.
func (r *replica) unseen(b *changelog.Batch) []ownWrite {
	if r.nOwn.Load() == 0 {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.unseenLocked(b)
}

func (r *replica) unseenLocked(b *changelog.Batch) []ownWrite {
	if len(r.own) == 0 {
		return nil
	}
	seen := map[string]bool{}
	for i := range b.Records {
		rec := &b.Records[i]
		if e, ok := r.own[string(rec.Key)]; ok && rec.Offset >= e.offset {
			seen[string(rec.Key)] = true
		}
	}
	var out []ownWrite
	for k, e := range r.own {
		if e.offset < b.Next && !seen[k] {
			out = append(out, ownWrite{key: k, offset: e.offset, value: e.value})
		}
	}
	return out
}

// advance records that the file now holds the partition up to b.Next and
// drops the own writes it covers, and returns those it covers that were
// acknowledged after written (ownWrite entries not in written and not
// carried by b): they stay until the caller has put them in the file too,
// and then drops them with dropOwn.
func (r *replica) advance(b *changelog.Batch, written []ownWrite) (late []ownWrite) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.unseenLocked(b) {
		if !containsWrite(written, w) {
			late = append(late, w)
		}
	}
	if b.Next <= r.applied {
		return late
	}
	r.applied = b.Next
	r.signalLocked()
	for k, e := range r.own {
		if e.offset < b.Next && !containsWrite(late, ownWrite{key: k, offset: e.offset}) {
			r.deleteOwnLocked(k)
		}
	}
	return late
}

func containsWrite(ws []ownWrite, w ownWrite) bool {
	for _, x := range ws {
		if x.key == w.key && x.offset == w.offset {
			return true
		}
	}
	return false
}

// reset records that the file holds the partition up to next, whatever it
// held before (a rebuilt file), and drops the own writes it covers.
func (r *replica) reset(next int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied = next
	r.signalLocked()
	for k, e := range r.own {
		if e.offset < next {
			r.deleteOwnLocked(k)
		}
	}
}

// forget drops every entry of the overlay (a delta restore's records it
// held, when the restore failed).
func (r *replica) forget() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.own {
		r.deleteOwnLocked(k)
	}
}

// dropOwn drops the own writes ws, now in the file, unless a newer write of
// their key replaced them meanwhile.
func (r *replica) dropOwn(ws []ownWrite) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range ws {
		if e, ok := r.own[w.key]; ok && e.offset == w.offset {
			r.deleteOwnLocked(w.key)
		}
	}
}

func (r *replica) deleteOwnLocked(key string) {
	delete(r.own, key)
	if r.nOwn.Add(-1) == 0 && r.empty != nil {
		close(r.empty)
		r.empty = nil
	}
}

// drained returns a channel closed once every own write acknowledged so far
// is in the file.
func (r *replica) drained() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.own) == 0 {
		return closedChan
	}
	if r.empty == nil {
		r.empty = make(chan struct{})
	}
	return r.empty
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
