package kvstore

import (
	"fmt"
	"sync"
	"time"
)

// PartitionState is what a store is doing with one partition of its topic.
type PartitionState int

const (
	// PartitionRestoring: a restore (in Open, or a rebuild of a running
	// store) is reading the partition. Reads serve the cache as it was.
	PartitionRestoring PartitionState = iota
	// PartitionFollowing: the follower reads the partition and the broker
	// answers. The partition may still lag: see PartitionStats.Lag and
	// CaughtUpAt.
	PartitionFollowing
	// PartitionStalled: the follower cannot reach the broker (or the broker
	// refuses it); it keeps trying and returns to PartitionFollowing by
	// itself once the broker answers. PartitionStats.Err says why.
	PartitionStalled
	// PartitionStopped: the follower has stopped for good (a poison record
	// under PoisonFail, a cache file that cannot be written, Close). Reads
	// serve the cache as it was; PartitionStats.Err says why.
	PartitionStopped
)

func (s PartitionState) String() string {
	switch s {
	case PartitionRestoring:
		return "restoring"
	case PartitionFollowing:
		return "following"
	case PartitionStalled:
		return "stalled"
	case PartitionStopped:
		return "stopped"
	}
	return fmt.Sprintf("PartitionState(%d)", int(s))
}

// PartitionStats is one partition's part of Stats.
type PartitionStats struct {
	Partition int32
	State     PartitionState
	// Applied is the next offset the cache will apply: every record below it
	// is in the cache (the checkpoint).
	Applied int64
	// End is the partition's end offset (for read_committed readers) as the
	// store last saw it, at most about a second ago while the broker answers.
	End int64
	// Lag is End - Applied, never below 0: records the cache has yet to apply.
	Lag int64
	// CaughtUpAt is the latest moment at which the cache held every record
	// then in the partition; zero before the first restore ends. Now minus
	// CaughtUpAt is how stale a read of this partition can be.
	CaughtUpAt time.Time
	// Err says why the partition is stalled or stopped; nil otherwise.
	Err error
}

// Stats is a snapshot of a store's state. Each part is consistent in itself
// (one partition's offsets and state are read together); the parts are read
// one after the other, microseconds apart.
type Stats struct {
	Topic string
	// Partitions has one entry per partition of the topic, in order.
	Partitions []PartitionStats
	// Restore is what the last restore did: the one in Open, or a rebuild
	// the running store made later.
	Restore RestoreStats
	// Guards counts, per guard, the full restores it forced since Open.
	Guards map[Guard]int64
	// PoisonSkipped counts the poison records left out under PoisonSkip
	// since Open (a record read again by a later restore counts again).
	PoisonSkipped int64
	// Misrouted counts records whose key sat on a partition other than the
	// one the store's partitioner (KeyPartitioner) picks, read since Open
	// (during restores and while following the topic). Each such key is
	// also logged once (Warn, with both partitions). A record read again by
	// a later restore counts again. Always 0 on a topic with one partition.
	Misrouted int64
	// Closed is true once Close has been called.
	Closed bool
}

// Stalest returns the partition that was caught up longest ago and how long
// ago that was at now; ok is false when there are no partitions. A
// partition never caught up counts as stale since the zero time.
func (st Stats) Stalest(now time.Time) (p PartitionStats, age time.Duration, ok bool) {
	for _, ps := range st.Partitions {
		if a := now.Sub(ps.CaughtUpAt); !ok || a > age {
			p, age, ok = ps, a, true
		}
	}
	return p, age, ok
}

// StateChange tells a StateListener that a partition moved from one state to
// another.
type StateChange struct {
	Partition int32
	From, To  PartitionState
	// Err says why, when To is PartitionStalled or PartitionStopped.
	Err error
}

// StateListener is called for every state change of every partition, one
// call at a time, from the goroutine that made the change (Open, the
// follower, or Close). It must return quickly and must not call the store's
// Close.
type StateListener func(StateChange)

// OnStateChange sets a function told about every change of a
// partition's state (restoring, following, stalled, stopped). Default: none.
func OnStateChange(l StateListener) Option {
	return optFn(func(c *config) { c.stateListener = l })
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

type partTrack struct {
	state      PartitionState
	stallBy    stallCause // why stalled, while it is
	applied    int64
	end        int64
	caughtUpAt time.Time
	obs        []endObs
	err        error
}

// stallCause is what stalled a partition, and so what clears the stall.
type stallCause int

const (
	stallNone  stallCause = iota
	stallProbe            // the end offsets could not be listed: a listing clears it
	stallFetch            // a fetch failed: a fetch without error clears it
)

// tracker holds every partition's state, offsets and freshness.
type tracker struct {
	listener StateListener

	mu    sync.Mutex
	parts []partTrack
	lmu   sync.Mutex // one listener call at a time
}

func newTracker(partitions int32, l StateListener) *tracker {
	return &tracker{listener: l, parts: make([]partTrack, partitions)}
}

// update runs fn on partition p's state under the lock, then tells the
// listener about a state change.
func (t *tracker) update(p int32, fn func(*partTrack)) {
	t.mu.Lock()
	pt := &t.parts[p]
	from := pt.state
	fn(pt)
	if pt.state != PartitionStalled {
		pt.stallBy = stallNone
	}
	var ch *StateChange
	if pt.state != from {
		ch = &StateChange{Partition: p, From: from, To: pt.state, Err: pt.err}
	}
	t.mu.Unlock()
	if ch != nil && t.listener != nil {
		t.lmu.Lock()
		defer t.lmu.Unlock()
		t.listener(*ch)
	}
}

// setAll moves every partition to state with err; a stopped partition stays
// stopped.
func (t *tracker) setAll(state PartitionState, err error) {
	for p := range t.parts {
		t.update(int32(p), func(pt *partTrack) {
			if pt.state != PartitionStopped {
				pt.state, pt.err = state, err
			}
		})
	}
}

// stallAll stalls every following partition because the end offsets could
// not be listed.
func (t *tracker) stallAll(err error) {
	for p := range t.parts {
		t.update(int32(p), func(pt *partTrack) {
			if pt.state == PartitionFollowing {
				pt.state, pt.err, pt.stallBy = PartitionStalled, err, stallProbe
			}
		})
	}
}

// stallFetch stalls partition p because a fetch of it failed.
func (t *tracker) stallFetch(p int32, err error) {
	t.update(p, func(pt *partTrack) {
		if pt.state == PartitionFollowing || pt.state == PartitionStalled {
			pt.state, pt.err, pt.stallBy = PartitionStalled, err, stallFetch
		}
	})
}

// recoverProbe clears the stalls a failed listing caused.
func (t *tracker) recoverProbe() { t.recover(stallProbe) }

// recoverFetch clears the stalls a failed fetch caused.
func (t *tracker) recoverFetch() { t.recover(stallFetch) }

func (t *tracker) recover(cause stallCause) {
	t.mu.Lock()
	var stalled []int32
	for p := range t.parts {
		if t.parts[p].state == PartitionStalled && t.parts[p].stallBy == cause {
			stalled = append(stalled, int32(p))
		}
	}
	t.mu.Unlock()
	for _, p := range stalled {
		t.update(p, func(pt *partTrack) {
			if pt.state == PartitionStalled && pt.stallBy == cause {
				pt.state, pt.err = PartitionFollowing, nil
			}
		})
	}
}

// restored records that a restore, which listed the end offsets at at and
// found end, brought p up to next. The cache is caught up as of at only if
// next reached end: a restore can end short of it (records it could not
// see), and then the follower has yet to get there.
func (t *tracker) restored(p int32, next, end int64, at time.Time) {
	t.update(p, func(pt *partTrack) {
		pt.applied, pt.obs = next, pt.obs[:0]
		pt.end = max(next, end)
		if next >= end {
			pt.caughtUpAt = at
		} else {
			pt.obs = append(pt.obs, endObs{at, end})
		}
	})
}

// observe records that p's end offset was end at at (a time taken before
// the broker was asked).
func (t *tracker) observe(p int32, end int64, at time.Time) {
	t.update(p, func(pt *partTrack) {
		pt.end = max(pt.end, end)
		if end <= pt.applied {
			pt.caughtUpAt = maxTime(pt.caughtUpAt, at)
			return
		}
		if n := len(pt.obs); n > 0 && pt.obs[n-1].end >= end {
			return // nothing new to reach
		}
		if len(pt.obs) == maxEndObs {
			pt.obs[maxEndObs-1] = endObs{at, end}
			return
		}
		pt.obs = append(pt.obs, endObs{at, end})
	})
}

// applied records that the cache now holds p up to next. Records of p
// arrived, so a fetch stall of p is over.
func (t *tracker) applied(p int32, next int64) {
	t.update(p, func(pt *partTrack) {
		if pt.state == PartitionStalled && pt.stallBy == stallFetch {
			pt.state, pt.err = PartitionFollowing, nil
		}
		if next <= pt.applied {
			return
		}
		pt.applied = next
		pt.end = max(pt.end, next)
		i := 0
		for ; i < len(pt.obs) && pt.obs[i].end <= next; i++ {
			pt.caughtUpAt = maxTime(pt.caughtUpAt, pt.obs[i].at)
		}
		pt.obs = append(pt.obs[:0], pt.obs[i:]...)
	})
}

// snapshot returns every partition's stats.
func (t *tracker) snapshot() []PartitionStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]PartitionStats, len(t.parts))
	for p, pt := range t.parts {
		out[p] = PartitionStats{Partition: int32(p), State: pt.state, Applied: pt.applied, End: pt.end,
			Lag: max(0, pt.end-pt.applied), CaughtUpAt: pt.caughtUpAt, Err: pt.err}
	}
	return out
}

// oldestCaughtUp returns the oldest CaughtUpAt of all partitions.
func (t *tracker) oldestCaughtUp() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	var oldest time.Time
	for p, pt := range t.parts {
		if p == 0 || pt.caughtUpAt.Before(oldest) {
			oldest = pt.caughtUpAt
		}
	}
	return oldest
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Stats returns a snapshot of the store's state: per partition its state,
// offsets, lag and freshness, and the last restore's figures and the
// counters. It is cheap (no I/O, no broker request) and safe for concurrent
// use, also after Close.
func (s *Store[V]) Stats() Stats {
	st := Stats{
		Topic:         s.topic,
		Partitions:    s.track.snapshot(),
		Restore:       s.lastRestore(),
		Guards:        s.guardsFired(),
		PoisonSkipped: s.poisonSkipped.Load(),
		Misrouted:     s.mis.count.Load(),
		Closed:        s.closing.Load(),
	}
	return st
}
