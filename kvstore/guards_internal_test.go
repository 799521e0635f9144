package kvstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/changelog"
)

// The guard decision as a table: which cache may serve as the base of a
// delta restore, which must be rebuilt, and why. Where several guards
// refuse a cache, the first in Open's order names it. A guard about the
// whole file refuses the file; one about some partitions refuses only
// those, and the rest of the file stays. GuardNoCache (no file) and
// GuardCorrupt for a file that cannot be read are decided before there is a
// meta to decide on; guards_test.go covers them, and the wiring of every
// guard, end to end.
func TestTheGuardDecisionNamesTheFirstGuardThatRefusesACache(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	info := changelog.TopicInfo{Name: "t", ID: [16]byte{7}, Partitions: 2, DeleteRetention: time.Hour}
	good := func() cacheMeta {
		return cacheMeta{format: formatVersion, topic: "t", topicID: [16]byte{7}, partitions: 2,
			current: allAt(2, now.Add(-time.Minute)), next: map[int32]int64{0: 5, 1: 7}}
	}
	start, end := map[int32]int64{0: 0, 1: 3}, map[int32]int64{0: 10, 1: 7}

	for _, c := range []struct {
		name   string
		change func(m *cacheMeta)
		guard  Guard
		reason string
		only   []int32 // the partitions refused alone; nil: whole or none
	}{
		{"a current cache within the log", func(*cacheMeta) {}, GuardNone, "", nil},
		{"checkpoints at the log's ends", func(m *cacheMeta) { m.next = map[int32]int64{0: 0, 1: 7} }, GuardNone, "", nil},
		{"current exactly delete.retention.ms ago", func(m *cacheMeta) { m.current = allAt(2, now.Add(-time.Hour)) }, GuardNone, "", nil},
		{"another format version", func(m *cacheMeta) { m.format = formatVersion + 1 }, GuardFormat,
			fmt.Sprintf("cache format version %d, want %d", formatVersion+1, formatVersion), nil},
		{"another topic's cache", func(m *cacheMeta) { m.topic = "u" }, GuardTopicRecreated, `cache is of topic "u"`, nil},
		{"the topic recreated", func(m *cacheMeta) { m.topicID = [16]byte{8} }, GuardTopicRecreated,
			"topic ID changed (topic deleted and recreated)", nil},
		{"partitions added", func(m *cacheMeta) { m.partitions = 1 }, GuardPartitionsChanged, "partition count changed from 1 to 2", nil},
		{"a partition without checkpoint", func(m *cacheMeta) { delete(m.next, 1) }, GuardCorrupt, "no checkpoint for partition 1", nil},
		{"offline past delete.retention.ms", func(m *cacheMeta) { m.current = allAt(2, now.Add(-2*time.Hour)) }, GuardRetentionExceeded,
			"partition 0 last current 2h0m0s ago, longer than delete.retention.ms (1h0m0s): deleted keys could come back (all 2 partitions refused)", nil},
		{"one partition behind past delete.retention.ms", func(m *cacheMeta) { m.current[1] = now.Add(-2 * time.Hour) }, GuardRetentionExceeded,
			"partition 1 last current 2h0m0s ago", []int32{1}},
		{"a current time an hour ahead (the clock stepped back)", func(m *cacheMeta) { m.current[1] = now.Add(time.Hour) }, GuardRetentionExceeded,
			"partition 1 recorded as current 1h0m0s in the future", []int32{1}},
		{"a current time seconds ahead (clocks drift)", func(m *cacheMeta) { m.current[1] = now.Add(time.Second) }, GuardNone, "", nil},
		{"a partition never recorded as current", func(m *cacheMeta) { delete(m.current, 0) }, GuardRetentionExceeded,
			"partition 0 never recorded as current", []int32{0}},
		{"a partition never restored here (partitioned mode)", func(m *cacheMeta) { delete(m.current, 0); m.next[0] = 0 }, GuardNoCache,
			"partition 0 was never restored into this cache", []int32{0}},
		{"a checkpoint below the log start", func(m *cacheMeta) { m.next[1] = 2 }, GuardBelowLogStart,
			"checkpoint 2 of partition 1 is below the log start offset 3", []int32{1}},
		{"a checkpoint above the end", func(m *cacheMeta) { m.next[0] = 11 }, GuardAboveEnd,
			"checkpoint 11 of partition 0 is above the end offset 10", []int32{0}},
		{"every checkpoint outside its log", func(m *cacheMeta) { m.next = map[int32]int64{0: 11, 1: 2} }, GuardAboveEnd,
			"partition 0 is above the end offset 10 (all 2 partitions refused)", nil},

		{"format before topic", func(m *cacheMeta) { m.format, m.topicID = 0, [16]byte{8} }, GuardFormat, "format", nil},
		{"topic before partitions", func(m *cacheMeta) { m.topicID, m.partitions = [16]byte{8}, 3 }, GuardTopicRecreated, "topic ID", nil},
		{"partitions before retention", func(m *cacheMeta) { m.partitions, m.current = 3, nil }, GuardPartitionsChanged, "partition count", nil},
		{"a missing checkpoint before retention", func(m *cacheMeta) { m.current, m.next = nil, map[int32]int64{0: 5} }, GuardCorrupt, "no checkpoint", nil},
		{"retention before the checkpoint of one partition", func(m *cacheMeta) { m.current[1], m.next[1] = time.Time{}, 2 }, GuardRetentionExceeded,
			"partition 1", []int32{1}},
		{"partitions in order", func(m *cacheMeta) { m.next[1], m.current[0] = 2, time.Time{} }, GuardRetentionExceeded, "partition 0", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := good()
			c.change(&m)
			g, reason, bad := decideGuard(m, info, start, end, now)
			require.Equal(t, c.guard, g, "reason: %s", reason)
			if c.guard == GuardNone {
				require.Empty(t, reason)
			} else {
				require.Contains(t, reason, c.reason)
			}
			var only []int32
			for _, b := range bad {
				only = append(only, b.p)
				require.NotEqual(t, GuardNone, b.guard)
				require.Contains(t, b.reason, fmt.Sprintf("partition %d", b.p))
			}
			require.Equal(t, c.only, only)
		})
	}
}
