package kvstore

import (
	"sync"
	"time"
)

// replicas is the store's set of replicas, one per partition, and the
// listener told about their state changes.
type replicas struct {
	all      []*replica
	listener StateListener
	lmu      sync.Mutex    // one listener call at a time
	qmu      sync.Mutex    // guards queue; a leaf: never held while calling out
	queue    []StateChange // changes not yet told, in the order they happened
}

func newReplicas(partitions int32, l StateListener) *replicas {
	rs := &replicas{listener: l, all: make([]*replica, partitions)}
	for p := range partitions {
		rs.all[p] = newReplica(p)
	}
	return rs
}

// maxEndObs bounds the end-offset observations kept per partition; past it
// the newest one is overwritten, which can only make CaughtUpAt older.
const maxEndObs = 16

// endObs is an end offset seen at a time: once the cache has applied up to
// end, it held everything the partition held at at.
type endObs struct {
	at  time.Time
	end int64
}

// stallCause is what stalled a partition, and so what clears the stall.
type stallCause int

const (
	stallNone    stallCause = iota
	stallProbe              // the end offsets could not be listed: a listing clears it
	stallFetch              // a fetch failed: a fetch without error clears it
	stallRebuild            // a partition's rebuild failed: its next try clears it
)

// update runs fn on partition p's replica under its lock, then tells the
// listener about a state change.
func (rs *replicas) update(p int32, fn func(*replica)) {
	r := rs.all[p]
	r.mu.Lock()
	from := r.state
	fn(r)
	r.signalLocked() // applied or state may have changed
	if r.state != PartitionStalled {
		r.stallBy = stallNone
	}
	changed := r.state != from && rs.listener != nil
	if changed { // queued under r.mu: a partition's changes are told in the order they happened
		rs.qmu.Lock()
		rs.queue = append(rs.queue, StateChange{Partition: p, From: from, To: r.state, Err: r.err})
		rs.qmu.Unlock()
	}
	r.mu.Unlock()
	if changed {
		rs.tell()
	}
}

// tell hands the queued changes to the listener, one call at a time, in
// queue order. The listener may call Stats: no replica lock is held.
func (rs *replicas) tell() {
	rs.lmu.Lock()
	defer rs.lmu.Unlock()
	for {
		rs.qmu.Lock()
		if len(rs.queue) == 0 {
			rs.qmu.Unlock()
			return
		}
		ch := rs.queue[0]
		rs.queue = rs.queue[1:]
		rs.qmu.Unlock()
		rs.listener(ch)
	}
}

// each runs update for every partition.
func (rs *replicas) each(fn func(*replica)) {
	for p := range rs.all {
		rs.update(int32(p), fn)
	}
}

// setAll moves every partition to state with err; a stopped partition stays
// stopped (Close stops every partition last, whatever a rebuild still
// running sets), and an idle one (partitioned mode: another member's) stays
// idle unless it is stopped.
func (rs *replicas) setAll(state PartitionState, err error) {
	rs.each(func(r *replica) {
		if r.state != PartitionStopped && (r.state != PartitionIdle || state == PartitionStopped) {
			r.state, r.err = state, err
		}
	})
}

// stallAll stalls every following partition because the end offsets could
// not be listed.
func (rs *replicas) stallAll(err error) {
	rs.each(func(r *replica) {
		if r.state == PartitionFollowing {
			r.state, r.err, r.stallBy = PartitionStalled, err, stallProbe
		}
	})
}

// stallFetch stalls partition p because a fetch of it failed.
func (rs *replicas) stallFetch(p int32, err error) {
	rs.update(p, func(r *replica) {
		if r.state == PartitionFollowing || r.state == PartitionStalled {
			r.state, r.err, r.stallBy = PartitionStalled, err, stallFetch
		}
	})
}

// recover clears the stalls cause made.
func (rs *replicas) recover(cause stallCause) {
	for _, r := range rs.all {
		r.mu.RLock()
		stalled := r.state == PartitionStalled && r.stallBy == cause
		r.mu.RUnlock()
		if !stalled {
			continue
		}
		rs.update(r.p, func(r *replica) {
			if r.state == PartitionStalled && r.stallBy == cause {
				r.state, r.err = PartitionFollowing, nil
			}
		})
	}
}

// restored records that a restore, which listed the end offsets at at and
// found end, brought p up to next. A restore that ends short of end does so
// because the partition stayed quiet while its end did not move: the
// records left below end are ones a reader cannot see (aborted, or
// compacted to empty batches), so the cache holds everything visible up to
// end and counts as caught up as of at, its checkpoint staying at next.
//
// A standby made owner while it was restored (an incoming partition, say)
// is served once caught up with the end listed when it was made owner
// (applyView lists it, or has set target to it), not with this restore's:
// its previous owner may have served records past this restore's end. It
// stays PartitionRestoring until then.
func (rs *replicas) restored(p int32, next, end int64, at time.Time) {
	rs.update(p, func(r *replica) {
		r.applied, r.obs, r.quietEnd = next, r.obs[:0], 0
		r.end = max(next, end)
		if next < end {
			r.quietEnd = end
		}
		r.caughtUpAt, r.marked = at, at // the restore recorded at in the file
		if r.promoted || r.target > r.reached() {
			r.warm = false
			return
		}
		r.warm, r.target = r.followed, 0
	})
}

// overlaid records that a delta restore, which listed the end offsets at
// at and found end, holds p's records from its checkpoint next on in the
// overlay for the follower to write (overlay.go): reads show everything
// below end, as after restored, while the file still holds p up to next
// only and records an older time p was current (so the time is written
// with the follower's first commit past end).
func (rs *replicas) overlaid(p int32, next, end int64, at time.Time) {
	rs.restored(p, next, end, at)
	rs.update(p, func(r *replica) { r.marked = time.Time{} })
}

// still returns a function that says whether p is still taken on as it is
// now (partitioned mode: not given up, nor given up and taken on again
// since): a background rebuild must not swap in a bucket otherwise.
func (rs *replicas) still(p int32) func() bool {
	r := rs.all[p]
	r.mu.RLock()
	gen := r.gen
	r.mu.RUnlock()
	return func() bool {
		r.mu.RLock()
		defer r.mu.RUnlock()
		return r.gen == gen && r.followed
	}
}

// rebuilding marks p restoring as a rebuild of it begins, unless it is
// stopped, or idle: given up before the rebuild began (the rebuild is stale
// and will swap nothing in).
func (rs *replicas) rebuilding(p int32) {
	rs.update(p, func(r *replica) {
		if r.state != PartitionStopped && r.state != PartitionIdle {
			r.state, r.err = PartitionRestoring, nil
		}
	})
}

// caughtUp says whether the follower reads p and p has caught up (it is
// served, or a standby ready to be).
func (rs *replicas) caughtUp(p int32) bool {
	r := rs.all[p]
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.followed && r.warm
}

// followed says whether the follower is to read p.
func (rs *replicas) followed(p int32) bool {
	r := rs.all[p]
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.followed
}

// unfollow records that the follower no longer reads p (partitioned mode:
// the partition went to another member): it is not served, its own writes
// are forgotten (the topic has them), and its bucket and checkpoint stay.
func (rs *replicas) unfollow(p int32) {
	rs.update(p, func(r *replica) {
		r.gen++
		r.followed, r.warm, r.target, r.obs = false, false, 0, r.obs[:0]
		r.state, r.err = PartitionIdle, nil
		for k := range r.own {
			r.deleteOwnLocked(k)
		}
	})
}

// observe records that p's end offset was end at at (a time taken before
// the broker was asked).
func (rs *replicas) observe(p int32, end int64, at time.Time) {
	rs.update(p, func(r *replica) {
		r.end = max(r.end, end)
		if end <= r.reached() {
			r.caughtUpAt = maxTime(r.caughtUpAt, at)
			return
		}
		if n := len(r.obs); n > 0 && r.obs[n-1].end >= end {
			return // nothing new to reach
		}
		if len(r.obs) == maxEndObs {
			r.obs[maxEndObs-1] = endObs{at, end}
			return
		}
		r.obs = append(r.obs, endObs{at, end})
	})
}

// applied records that the cache now holds p up to next (advance may have
// moved the checkpoint already). Records of p arrived, so a fetch stall of p
// is over.
func (rs *replicas) applied(p int32, next int64) {
	rs.update(p, func(r *replica) {
		if r.state == PartitionStalled && r.stallBy == stallFetch {
			r.state, r.err = PartitionFollowing, nil
		}
		r.applied = max(r.applied, next)
		r.end = max(r.end, r.applied)
		if r.target > 0 && r.applied >= r.target { // a delta through the follower is done
			r.target, r.warm = 0, true
			if r.state == PartitionRestoring {
				r.state = PartitionFollowing
			}
		}
		if r.applied >= r.quietEnd {
			r.quietEnd = 0
		}
		i := 0
		for ; i < len(r.obs) && r.obs[i].end <= r.reached(); i++ {
			r.caughtUpAt = maxTime(r.caughtUpAt, r.obs[i].at)
		}
		r.obs = append(r.obs[:0], r.obs[i:]...)
	})
}

// snapshot returns every partition's stats.
func (rs *replicas) snapshot() []PartitionStats {
	out := make([]PartitionStats, len(rs.all))
	for p, r := range rs.all {
		r.mu.RLock()
		out[p] = PartitionStats{Partition: int32(p), State: r.state, Applied: r.applied, End: r.end,
			Lag: max(0, r.end-r.reached()), CaughtUpAt: r.caughtUpAt, Err: r.err, Role: r.role, Owner: r.owner}
		r.mu.RUnlock()
	}
	return out
}

// toMark returns the partitions whose CaughtUpAt moved by at least every
// since the file last recorded it, with their CaughtUpAt: what the next
// commit should record as the time each was current. nil if none.
func (rs *replicas) toMark(every time.Duration) map[int32]time.Time {
	var out map[int32]time.Time
	for _, r := range rs.all {
		r.mu.RLock()
		// While a restore's quiet tail is unread (applied < quietEnd), the
		// file holds no more than when the restore recorded its time: the
		// caught-up time then rests on records taken to be invisible, and
		// is not written down.
		if r.applied >= r.quietEnd && r.caughtUpAt.Sub(r.marked) >= every && r.caughtUpAt.After(r.marked) {
			if out == nil {
				out = map[int32]time.Time{}
			}
			out[r.p] = r.caughtUpAt
		}
		r.mu.RUnlock()
	}
	return out
}

// marked records that the file now says each partition in at was current
// at its time.
func (rs *replicas) marked(at map[int32]time.Time) {
	for p, t := range at {
		r := rs.all[p]
		r.mu.Lock()
		r.marked = maxTime(r.marked, t)
		r.mu.Unlock()
	}
}
