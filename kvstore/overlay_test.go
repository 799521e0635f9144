package kvstore

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/changelog"
)

// An own write that the follower passes without reading it (compaction
// removed it first) must be handed back for the cache file; one it read, or
// read something newer of, must not.
func TestOverlayHandsBackOwnWritesTheFollowerPassedUnseen(t *testing.T) {
	o := newOverlay(2, map[int32]int64{0: 10, 1: 10})
	o.put(0, "deleted-then-compacted", 11, nil)
	o.put(0, "read", 12, []byte("v12"))
	o.put(0, "newer-read", 13, []byte("v13"))
	o.put(0, "not-yet-passed", 20, []byte("v20"))
	o.put(1, "other-partition", 11, nil)

	bs := []changelog.Batch{{
		Partition: 0,
		Next:      15,
		Records: []changelog.Record{
			{Key: []byte("read"), Offset: 12, Value: []byte("v12")},
			{Key: []byte("newer-read"), Offset: 14, Value: []byte("v14")},
			{Key: []byte("deleted-then-compacted"), Offset: 9}, // older than the entry
		},
	}}
	got := o.unseenLocked(bs)
	require.Equal(t, []ownWrite{{part: 0, key: "deleted-then-compacted", offset: 11}}, got)

	o.advanceLocked(0, 15, nil)
	_, ok := o.get(0, "not-yet-passed")
	require.True(t, ok)
	_, ok = o.get(0, "read")
	require.False(t, ok)
}
