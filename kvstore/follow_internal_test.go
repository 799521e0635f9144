package kvstore

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/changelog"
)

// bareStore is a one-partition store with a cache file at offset 0 and no
// broker: enough to drive applyTail and lookup directly.
func bareStore(t *testing.T) *Store[struct{}] {
	t.Helper()
	s := &Store[struct{}]{
		cfg:    defaultConfig(),
		topic:  "t",
		info:   changelog.TopicInfo{Name: "t", Partitions: 1, DeleteRetention: time.Hour},
		log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		part:   PartitionerMurmur2.hasher(),
		reps:   newReplicas(1, nil),
		opened: true,
	}
	db, err := openBolt(filepath.Join(t.TempDir(), "t.db"), time.Second, false)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		return writeMeta(tx, "t", [16]byte{1}, 1, map[int32]int64{0: 0}, time.Now())
	}))
	s.db = db
	t.Cleanup(func() {
		s.snaps.drop() // as Close does: db.Close would wait for Gets' read snapshot
		db.Close()
	})
	return s
}

// An own write acknowledged while the follower commits a poll that passes
// its offset without carrying it (compaction removed it) goes into the file
// after that commit. Until it is there, Get must still see it in the
// overlay: there is no moment at which an acknowledged write is invisible.
func TestAnOwnWriteLeavesTheOverlayOnlyOnceItIsInTheFile(t *testing.T) {
	s := bareStore(t)
	mine := []byte("mine-v1")
	testHookCommitted = func() { s.reps.all[0].putOwn("mine", 5, mine) } // acknowledged during the commit
	var inWindow []byte
	var foundInWindow bool
	testHookLateWindow = func() {
		v, ok, err := s.lookup("mine")
		require.NoError(t, err)
		inWindow, foundInWindow = v, ok
	}
	t.Cleanup(func() { testHookCommitted, testHookLateWindow = nil, nil })

	// The poll covers offsets 0..9 and carries only a tombstone of another
	// key: offset 5, the own write, was compacted away.
	bs := []changelog.Batch{{Partition: 0, Next: 10, Records: []changelog.Record{{Key: []byte("other"), Offset: 7}}}}
	require.NoError(t, s.applyTail(t.Context(), bs, false, nil))

	require.True(t, foundInWindow, "the acknowledged write vanished between the overlay's advance and the file's commit")
	require.Equal(t, mine, inWindow)
	v, ok, err := s.lookup("mine")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, mine, v)
	require.Zero(t, s.reps.all[0].nOwn.Load(), "once in the file, the replica lets go of it")
	select {
	case <-s.reps.all[0].drained():
	default:
		t.Fatal("an empty overlay reports itself drained")
	}
}

// A restore that ends short of a partition's end offset (the records left
// are ones a reader cannot see, and the end did not move) leaves the cache
// caught up as of the listing: no lag, no retention rebuild, and a later
// end offset is reached as usual.
func TestAQuietTailCountsAsCaughtUpAndIsLeftBehindByNewRecords(t *testing.T) {
	s := bareStore(t)
	at := time.Now()
	s.reps.restored(0, 5, 7, at) // offsets 5 and 6 hold nothing visible
	stale, why, _ := s.retentionExceeded(newRefills(context.Background(), s))
	require.Empty(t, stale, why)
	ps := s.reps.snapshot()[0]
	require.Equal(t, int64(5), ps.Applied, "the checkpoint stays where the reader is")
	require.Zero(t, ps.Lag)
	require.Equal(t, at, ps.CaughtUpAt)

	later := at.Add(time.Second)
	s.reps.observe(0, 7, later)
	require.Equal(t, later, s.reps.snapshot()[0].CaughtUpAt, "the same end, seen later: caught up later")

	newer := later.Add(time.Second)
	s.reps.observe(0, 9, newer)
	require.Equal(t, later, s.reps.snapshot()[0].CaughtUpAt, "behind a new record")
	require.Equal(t, int64(2), s.reps.snapshot()[0].Lag)
	s.reps.applied(0, 9)
	ps = s.reps.snapshot()[0]
	require.Equal(t, newer, ps.CaughtUpAt)
	require.Zero(t, ps.Lag)
	require.Equal(t, int64(9), ps.Applied)
}

// A standby made owner while a restore reads it is served once it has
// caught up with the end listed when it was made owner, not with the end
// its restore listed before (its previous owner may have served records
// past that): the restore's end leaves it restoring, not served, and so
// does a target set by the promotion past what the restore reached, until
// the follower applies it.
func TestAStandbyMadeOwnerDuringItsRestoreIsServedOnceCaughtUpWithThePromotion(t *testing.T) {
	s := bareStore(t)
	s.reps.update(0, func(r *replica) {
		r.role, r.followed, r.warm, r.state = RoleOwner, true, false, PartitionRestoring
		r.promoted = true // onAssign made the standby owner; applyView has not listed its end yet
	})
	s.reps.restored(0, 10, 10, time.Now())
	r := s.reps.all[0]
	require.False(t, r.warm, "not served on the restore's end")

	s.reps.update(0, func(r *replica) { r.promoted, r.target = false, 12 }) // applyView listed 12
	s.reps.restored(0, 10, 10, time.Now())                                  // a refill that listed before
	require.False(t, r.warm, "not served below the end listed at the promotion")
	require.Equal(t, PartitionRestoring, s.reps.snapshot()[0].State)
	s.reps.applied(0, 12)
	require.True(t, r.warm)
	require.Equal(t, PartitionFollowing, s.reps.snapshot()[0].State)

	s.reps.update(0, func(r *replica) { r.warm, r.state = false, PartitionRestoring })
	s.reps.restored(0, 20, 20, time.Now()) // nothing promoted, no target: served at its end
	require.True(t, r.warm)
}
