package kvstore

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/compactkv/compactkv/changelog"
)

// Guard names a reason the cache could not be trusted and was rebuilt from
// the topic.
type Guard int

// The guards, in the order Open checks them.
const (
	GuardNone              Guard = iota // nothing refused the cache: a delta restore
	GuardNoCache                        // no cache file yet
	GuardCorrupt                        // unreadable, truncated, garbage, or no checkpoint
	GuardFormat                         // written by another cache format version
	GuardTopicRecreated                 // the topic ID changed: deleted and created again
	GuardPartitionsChanged              // the partition count changed: keys may have moved
	GuardRetentionExceeded              // offline longer than delete.retention.ms: tombstones may be gone
	GuardBelowLogStart                  // a checkpoint below the log start offset: records deleted or expired
	GuardAboveEnd                       // a checkpoint above the end offset: topic truncated or recreated
	numGuards
)

var guardNames = [numGuards]string{
	"none", "no-cache", "corrupt", "format", "topic-recreated", "partitions-changed",
	"retention-exceeded", "below-log-start", "above-end",
}

// String returns the guard's name: "none", "no-cache", "corrupt", "format",
// "topic-recreated", "partitions-changed", "retention-exceeded",
// "below-log-start" or "above-end".
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

// partGuard is a guard that keeps one partition's bucket from serving as the
// base of a delta restore, and why.
type partGuard struct {
	p      int32
	guard  Guard
	reason string
}

// decideGuard says which guard keeps a cache with meta m from serving as the
// base of a delta restore of the topic info describes, whose partitions now
// start and end at start and end, and why; GuardNone if none does. A guard
// about the whole file (format, topic, partition count, a missing
// checkpoint) refuses the file. Otherwise each partition is judged alone
// (offline past delete.retention.ms, checkpoint outside the log): when some
// but not all are refused, bad lists them, and only they are rebuilt; the
// guard and reason returned are the first one's. It is a pure function of
// its arguments.
func decideGuard(m cacheMeta, info changelog.TopicInfo, start, end map[int32]int64, now time.Time) (g Guard, reason string, bad []partGuard) {
	switch {
	case m.format != formatVersion:
		return GuardFormat, fmt.Sprintf("cache format version %d, want %d", m.format, formatVersion), nil
	case m.topic != info.Name:
		return GuardTopicRecreated, fmt.Sprintf("cache is of topic %q", m.topic), nil
	case m.topicID != info.ID:
		return GuardTopicRecreated, "topic ID changed (topic deleted and recreated)", nil
	case m.partitions != info.Partitions:
		return GuardPartitionsChanged, fmt.Sprintf("partition count changed from %d to %d", m.partitions, info.Partitions), nil
	}
	for p := range info.Partitions {
		if _, ok := m.next[p]; !ok {
			return GuardCorrupt, fmt.Sprintf("no checkpoint for partition %d", p), nil
		}
	}
	for p := range info.Partitions {
		if v := partitionVerdict(m, p, info, start, end, now); v != nil {
			bad = append(bad, *v)
		}
	}
	switch {
	case len(bad) == 0:
		return GuardNone, "", nil
	case len(bad) == int(info.Partitions): // nothing to keep: one full restore
		reason = bad[0].reason
		if len(bad) > 1 {
			reason += fmt.Sprintf(" (all %d partitions refused)", len(bad))
		}
		return bad[0].guard, reason, nil
	}
	return bad[0].guard, bad[0].reason, bad
}

// partitionVerdict says which guard, if any, keeps partition p's bucket
// from serving as the base of a delta: last current longer ago than
// delete.retention.ms (or in the future: the clock stepped back), or a
// checkpoint outside the partition's log. nil if none does.
func partitionVerdict(m cacheMeta, p int32, info changelog.TopicInfo, start, end map[int32]int64, now time.Time) *partGuard {
	n, hasNext := m.next[p]
	cur, ok := m.current[p]
	switch off := now.Sub(cur); {
	case !hasNext:
		return &partGuard{p, GuardCorrupt, fmt.Sprintf("no checkpoint for partition %d", p)}
	case !ok && n == 0: // partitioned mode: a partition this member never held
		return &partGuard{p, GuardNoCache, fmt.Sprintf("partition %d was never restored into this cache", p)}
	case !ok || off > info.DeleteRetention || off < -time.Minute:
		why := "never recorded as current"
		switch {
		case ok && off < 0: // the clock stepped back: how long it was offline is unknown
			why = fmt.Sprintf("recorded as current %v in the future", (-off).Round(time.Millisecond))
		case ok:
			why = fmt.Sprintf("last current %v ago", off.Round(time.Millisecond))
		}
		return &partGuard{p, GuardRetentionExceeded, fmt.Sprintf(
			"partition %d %s, longer than delete.retention.ms (%v): deleted keys could come back", p, why, info.DeleteRetention)}
	case n < start[p]:
		return &partGuard{p, GuardBelowLogStart, fmt.Sprintf(
			"checkpoint %d of partition %d is below the log start offset %d", n, p, start[p])}
	case n > end[p]:
		return &partGuard{p, GuardAboveEnd, fmt.Sprintf(
			"checkpoint %d of partition %d is above the end offset %d", n, p, end[p])}
	}
	return nil
}
