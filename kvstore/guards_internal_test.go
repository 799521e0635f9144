package kvstore

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/changelog"
)

// The guard decision as a table: which cache may serve as the base of a
// delta restore, which must be rebuilt, and why. Where several guards
// refuse a cache, the first in Open's order names it. GuardNoCache (no
// file) and GuardCorrupt for a file that cannot be read are decided before
// there is a meta to decide on; guards_test.go covers them, and the wiring
// of every guard, end to end.
func TestTheGuardDecisionNamesTheFirstGuardThatRefusesACache(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	info := changelog.TopicInfo{Name: "t", ID: [16]byte{7}, Partitions: 2, DeleteRetention: time.Hour}
	good := func() cacheMeta {
		return cacheMeta{format: formatVersion, topic: "t", topicID: [16]byte{7}, partitions: 2,
			currentAt: now.Add(-time.Minute), next: map[int32]int64{0: 5, 1: 7}}
	}
	start, end := map[int32]int64{0: 0, 1: 3}, map[int32]int64{0: 10, 1: 7}

	for _, c := range []struct {
		name   string
		change func(m *cacheMeta)
		guard  Guard
		reason string
	}{
		{"a current cache within the log", func(*cacheMeta) {}, GuardNone, ""},
		{"checkpoints at the log's ends", func(m *cacheMeta) { m.next = map[int32]int64{0: 0, 1: 7} }, GuardNone, ""},
		{"current exactly delete.retention.ms ago", func(m *cacheMeta) { m.currentAt = now.Add(-time.Hour) }, GuardNone, ""},
		{"another format version", func(m *cacheMeta) { m.format = formatVersion + 1 }, GuardFormat,
			"cache format version 2, want 1"},
		{"another topic's cache", func(m *cacheMeta) { m.topic = "u" }, GuardTopicRecreated, `cache is of topic "u"`},
		{"the topic recreated", func(m *cacheMeta) { m.topicID = [16]byte{8} }, GuardTopicRecreated,
			"topic ID changed (topic deleted and recreated)"},
		{"partitions added", func(m *cacheMeta) { m.partitions = 1 }, GuardPartitionsChanged, "partition count changed from 1 to 2"},
		{"offline past delete.retention.ms", func(m *cacheMeta) { m.currentAt = now.Add(-2 * time.Hour) }, GuardRetentionExceeded,
			"cache last current 2h0m0s ago, longer than delete.retention.ms (1h0m0s)"},
		{"a partition without checkpoint", func(m *cacheMeta) { delete(m.next, 1) }, GuardCorrupt, "no checkpoint for partition 1"},
		{"a checkpoint below the log start", func(m *cacheMeta) { m.next[1] = 2 }, GuardBelowLogStart,
			"checkpoint 2 of partition 1 is below the log start offset 3"},
		{"a checkpoint above the end", func(m *cacheMeta) { m.next[0] = 11 }, GuardAboveEnd,
			"checkpoint 11 of partition 0 is above the end offset 10"},

		{"format before topic", func(m *cacheMeta) { m.format, m.topicID = 0, [16]byte{8} }, GuardFormat, "format"},
		{"topic before partitions", func(m *cacheMeta) { m.topicID, m.partitions = [16]byte{8}, 3 }, GuardTopicRecreated, "topic ID"},
		{"partitions before retention", func(m *cacheMeta) { m.partitions, m.currentAt = 3, time.Time{} }, GuardPartitionsChanged, "partition count"},
		{"retention before checkpoints", func(m *cacheMeta) { m.currentAt, m.next = time.Time{}, nil }, GuardRetentionExceeded, "delete.retention.ms"},
		{"checkpoints in partition order", func(m *cacheMeta) { m.next = map[int32]int64{0: 11} }, GuardAboveEnd, "partition 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := good()
			c.change(&m)
			g, reason := decideGuard(m, info, start, end, now)
			require.Equal(t, c.guard, g, "reason: %s", reason)
			if c.guard == GuardNone {
				require.Empty(t, reason)
			} else {
				require.Contains(t, reason, c.reason)
			}
		})
	}
}
