package kvstore

import "sync/atomic"

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
