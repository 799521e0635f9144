package kvstore

import (
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/compactkv/compactkv/changelog"
)

// Guard names a reason the cache could not be trusted and was rebuilt from
// the topic.
type Guard int

// The guards, in the order Open checks them.
const (
	GuardNone              Guard = iota
	GuardNoCache                 // no cache file yet
	GuardCorrupt                 // unreadable, truncated, garbage, or no checkpoint
	GuardFormat                  // written by another cache format version
	GuardTopicRecreated          // the topic ID changed: deleted and created again
	GuardPartitionsChanged       // the partition count changed: keys may have moved
	GuardRetentionExceeded       // offline longer than delete.retention.ms: tombstones may be gone
	GuardBelowLogStart           // a checkpoint below the log start offset: records deleted or expired
	GuardAboveEnd                // a checkpoint above the end offset: topic truncated or recreated
	numGuards
)

var guardNames = [numGuards]string{
	"none", "no-cache", "corrupt", "format", "topic-recreated", "partitions-changed",
	"retention-exceeded", "below-log-start", "above-end",
}

func (g Guard) String() string {
	if g >= 0 && g < numGuards {
		return guardNames[g]
	}
	return "unknown"
}

// MarshalText returns the guard's name ("no-cache", "corrupt", ...), so
// that Stats encodes readably (encoding/json, slog).
func (g Guard) MarshalText() ([]byte, error) { return []byte(g.String()), nil }

// guardCounts counts how often each guard fired for one store.
type guardCounts [numGuards]atomic.Int64

// guardsFired returns how often each guard has forced a full restore of this
// store's cache (at Open, and while running when the follower meets a gap),
// leaving out those that never fired.
func (s *Store[V]) guardsFired() map[Guard]int64 {
	out := map[Guard]int64{}
	for g := range numGuards {
		if n := s.guards[g].Load(); n > 0 {
			out[g] = n
		}
	}
	return out
}

// decideGuard says which guard keeps a cache with meta m from serving as the
// base of a delta restore of the topic info describes, whose partitions now
// start and end at start and end, and why; GuardNone if none does. It is a
// pure function of its arguments.
func decideGuard(m cacheMeta, info changelog.TopicInfo, start, end map[int32]int64, now time.Time) (Guard, string) {
	switch {
	case m.format != formatVersion:
		return GuardFormat, fmt.Sprintf("cache format version %d, want %d", m.format, formatVersion)
	case m.topic != info.Name:
		return GuardTopicRecreated, fmt.Sprintf("cache is of topic %q", m.topic)
	case m.topicID != info.ID:
		return GuardTopicRecreated, "topic ID changed (topic deleted and recreated)"
	case m.partitions != info.Partitions:
		return GuardPartitionsChanged, fmt.Sprintf("partition count changed from %d to %d", m.partitions, info.Partitions)
	}
	if off := now.Sub(m.currentAt); off > info.DeleteRetention {
		return GuardRetentionExceeded, fmt.Sprintf("cache last current %v ago, longer than delete.retention.ms (%v): deleted keys could come back",
			off.Round(time.Millisecond), info.DeleteRetention)
	}
	for p := range info.Partitions {
		n, ok := m.next[p]
		switch {
		case !ok:
			return GuardCorrupt, fmt.Sprintf("no checkpoint for partition %d", p)
		case n < start[p]:
			return GuardBelowLogStart, fmt.Sprintf("checkpoint %d of partition %d is below the log start offset %d", n, p, start[p])
		case n > end[p]:
			return GuardAboveEnd, fmt.Sprintf("checkpoint %d of partition %d is above the end offset %d", n, p, end[p])
		}
	}
	return GuardNone, ""
}

// partitionsOutside returns the partitions whose checkpoint in next lies
// outside their log, below start or above end: those a delta restore
// cannot carry on from.
func partitionsOutside(next, start, end map[int32]int64) []int32 {
	var out []int32
	for p, n := range next {
		if n < start[p] || n > end[p] {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}
