package kvstore

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/changelog"
)

// An own write that the follower passes without reading it (compaction
// removed it first) must be handed back for the cache file; one it read, or
// read something newer of, must not.
func TestAReplicaHandsBackOwnWritesTheFollowerPassedUnseen(t *testing.T) {
	r := newReplica(0)
	r.reset(10)
	r.putOwn("deleted-then-compacted", 11, nil)
	r.putOwn("read", 12, []byte("v12"))
	r.putOwn("newer-read", 13, []byte("v13"))
	r.putOwn("not-yet-passed", 20, []byte("v20"))
	r.putOwn("already-in-the-file", 9, []byte("v9")) // below the checkpoint: dropped

	b := changelog.Batch{
		Partition: 0,
		Next:      15,
		Records: []changelog.Record{
			{Key: []byte("read"), Offset: 12, Value: []byte("v12")},
			{Key: []byte("newer-read"), Offset: 14, Value: []byte("v14")},
			{Key: []byte("deleted-then-compacted"), Offset: 9}, // older than the own write
		},
	}
	got := r.unseen(&b)
	require.Equal(t, []ownWrite{{key: "deleted-then-compacted", offset: 11}}, got)

	late := r.advance(&b, got)
	require.Empty(t, late, "what the commit wrote is not late")
	_, ok := r.getOwn("not-yet-passed")
	require.True(t, ok)
	for _, k := range []string{"read", "newer-read", "deleted-then-compacted", "already-in-the-file"} {
		_, ok = r.getOwn(k)
		require.False(t, ok, k)
	}
	select {
	case <-r.drained():
		t.Fatal("not drained while an own write waits")
	default:
	}
	r.reset(21)
	select {
	case <-r.drained():
	default:
		t.Fatal("drained once every own write is in the file")
	}
}
