package kvstore

import (
	"encoding/json"
	"fmt"
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
	// PartitionIdle (partitioned mode): another member owns the partition
	// and this store does not follow it; its cache is kept, not served.
	PartitionIdle
)

// String returns the state's name: "restoring", "following", "stalled",
// "stopped" or "idle".
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
	case PartitionIdle:
		return "idle"
	}
	return fmt.Sprintf("PartitionState(%d)", int(s))
}

// MarshalText returns the state's name, so that Stats encodes readably
// (encoding/json, slog).
func (s PartitionState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// PartitionStats is one partition's part of Stats.
type PartitionStats struct {
	// Partition is the partition's number.
	Partition int32
	// State is what the store is doing with the partition.
	State PartitionState
	// Role is what the store is to the partition: RoleOwner (it serves
	// it; every partition in global mode), RoleStandby or RoleNone.
	Role PartitionRole
	// Owner is the advertised address of the partition's owner in
	// partitioned mode ("" while none, and in global mode).
	Owner string
	// Applied is the next offset the cache file will apply: every record
	// below it is in the file (its checkpoint). Reads may show more: own
	// writes, and for a moment after Open, the records of a delta restore
	// that the follower has yet to write into the file.
	Applied int64
	// End is the partition's end offset (for read_committed readers) as the
	// store last saw it, at most about a second ago while the broker answers.
	End int64
	// Lag is End minus the offset below which reads show every record
	// (Applied, or beyond it as above), never below 0: records the store
	// has yet to read.
	Lag int64
	// CaughtUpAt is the latest moment at which reads showed every record
	// then in the partition; zero before the first restore ends. Now minus
	// CaughtUpAt is how stale a read of this partition can be.
	CaughtUpAt time.Time
	// Err says why the partition is stalled or stopped; nil otherwise.
	Err error
}

// MarshalJSON encodes the partition's stats with Err as its message (or
// null), so that a snapshot reads well on a debug endpoint.
func (ps PartitionStats) MarshalJSON() ([]byte, error) {
	type plain PartitionStats
	var msg *string
	if ps.Err != nil {
		m := ps.Err.Error()
		msg = &m
	}
	return json.Marshal(struct {
		plain
		Err *string
	}{plain(ps), msg})
}

// Stats is a snapshot of a store's state. Each part is consistent in itself
// (one partition's offsets and state are read together); the parts are read
// one after the other, microseconds apart.
type Stats struct {
	// Topic is the topic's name.
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
	// Group is partitioned mode's state (Group); nil in global mode.
	Group *GroupStats
}

// Stalest returns the partition that was caught up longest ago and how long
// ago that was at now; ok is false when there are no partitions. A
// partition never caught up counts as stale since the zero time.
//
// In partitioned mode only the partitions the store follows (owned or
// standby) count: the others are another member's to keep current.
func (st Stats) Stalest(now time.Time) (p PartitionStats, age time.Duration, ok bool) {
	for _, ps := range st.Partitions {
		if ps.Role == RoleNone {
			continue
		}
		if a := now.Sub(ps.CaughtUpAt); !ok || a > age {
			p, age, ok = ps, a, true
		}
	}
	return p, age, ok
}

// Owned returns the partitions the store serves (every partition in global
// mode), ascending: in partitioned mode, what to narrow a Position to
// (Position.Only) before WaitFor. A partition owned but still restoring is
// included; its State says so.
func (st Stats) Owned() []int32 {
	var out []int32
	for _, ps := range st.Partitions {
		if ps.Role == RoleOwner {
			out = append(out, ps.Partition)
		}
	}
	return out
}

// StateChange tells a StateListener that a partition moved from one state to
// another.
type StateChange struct {
	// Partition is the partition whose state changed.
	Partition int32
	// From and To are its states before and after the change.
	From, To PartitionState
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
		Partitions:    s.reps.snapshot(),
		Restore:       s.lastRestore(),
		Guards:        s.guardsFired(),
		PoisonSkipped: s.poisonSkipped.Load(),
		Misrouted:     s.mis.count.Load(),
		Closed:        s.closing.Load(),
		Group:         s.groupStats(),
	}
	return st
}
