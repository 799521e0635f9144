package kvstore_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/kvstore"
)

// changedWhileAway seeds a cache in dir, then changes the topic through
// another store (Puts and Deletes, n of them): what the next Open of dir
// restores as a delta. It returns the model and the end offsets the cache's
// checkpoint stands at.
func (e *env) changedWhileAway(dir string, seed, n int, extra ...kvstore.Option) (map[string]User, map[int32]int64) {
	e.t.Helper()
	model := e.seeded(dir, seed, extra...)
	before := e.endOffsets()
	w := e.open("", extra...)
	randomOps(e.t, w, model, n, rand.New(rand.NewPCG(5, uint64(n))))
	require.NoError(e.t, w.Close())
	return model, before
}

func TestADeltaRestoreServesWhatItReadBeforeTheFileHoldsIt(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	model, before := e.changedWhileAway(dir, 300, 120, kvstore.Partitions(3))
	release := kvstore.HoldOverlaid()
	defer release()

	s := e.open(dir)
	st := s.Stats().Restore
	require.Equal(t, "delta", st.Mode, st.Reason)
	require.EqualValues(t, 120, st.Records)

	// The file still holds what it held: only memory has the delta, and
	// the store serves it, Puts and Deletes alike, caught up.
	cp, _, err := kvstore.FileCheckpoint(s)
	require.NoError(t, err)
	require.Equal(t, before, cp)
	require.Equal(t, model, contents(t, s))
	for k, u := range model {
		got, ok, err := s.Get(ctxT(t), k)
		require.NoError(t, err)
		require.True(t, ok, k)
		require.Equal(t, u, got)
	}
	for _, ps := range s.Stats().Partitions {
		require.Equal(t, kvstore.PartitionFollowing, ps.State)
		require.Zero(t, ps.Lag, "partition %d", ps.Partition)
	}

	// Once the follower writes it, the file holds the topic's end.
	release()
	end := e.endOffsets()
	awaitFileAt(t, s, end)
	require.Equal(t, model, contents(t, s))
	require.NoError(t, s.Close())

	again := e.open(dir)
	require.Equal(t, "delta", again.Stats().Restore.Mode)
	require.Zero(t, again.Stats().Restore.Records, "the file held the delta")
	require.Equal(t, model, contents(t, again))
}

func TestAStoreClosedBeforeItWroteItsDeltaReadsTheSameDeltaAgain(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	model, before := e.changedWhileAway(dir, 200, 80)
	release := kvstore.HoldOverlaid()
	s := e.open(dir)
	require.EqualValues(t, 80, s.Stats().Restore.Records)
	require.NoError(t, s.Close()) // as a crash would: the follower never wrote it
	release()

	// The file's checkpoint did not move past what it holds: the next
	// Open reads the same records again and ends with the topic's state.
	s = e.open(dir)
	st := s.Stats().Restore
	require.Equal(t, "delta", st.Mode, st.Reason)
	require.EqualValues(t, 80, st.Records)
	require.Equal(t, model, contents(t, s))
	require.Eventually(t, func() bool {
		cp, _, err := kvstore.FileCheckpoint(s)
		require.NoError(t, err)
		return !equalOffsets(cp, before)
	}, 10*time.Second, 5*time.Millisecond)
}

func TestADeltaLargerThanAQuarterOfRestoreMemoryIsInTheFileWhenOpenReturns(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	// About 220 bytes an entry held (RestoreMemory's count): 6,000 changes
	// overflow a quarter of 1 MiB.
	model, _ := e.changedWhileAway(dir, 200, 6000)
	release := kvstore.HoldOverlaid() // would hold a delta kept in memory
	defer release()

	s := e.open(dir, kvstore.RestoreMemory(1<<20))
	require.Equal(t, "delta", s.Stats().Restore.Mode)
	cp, _, err := kvstore.FileCheckpoint(s)
	require.NoError(t, err)
	require.Equal(t, e.endOffsets(), cp, "over the budget, the delta goes into the file as it is read")
	require.Equal(t, model, contents(t, s))
}

// awaitFileAt waits until s's cache file's checkpoint is end.
func awaitFileAt(t *testing.T, s *kvstore.Store[User], end map[int32]int64) {
	t.Helper()
	require.Eventually(t, func() bool {
		cp, _, err := kvstore.FileCheckpoint(s)
		require.NoError(t, err)
		return equalOffsets(cp, end)
	}, 10*time.Second, 5*time.Millisecond)
}

func equalOffsets(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for p, o := range a {
		if b[p] != o {
			return false
		}
	}
	return true
}

func TestWritesDuringTheDeltaWindowWinAndTheFileEndsWithTheTopicsState(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	// Fetches of a few records each: the delta comes in many polls, each
	// written in a transaction of its own.
	small := kvstore.KafkaOpts(kgo.FetchMaxBytes(512), kgo.FetchMaxPartitionBytes(512))
	model, before := e.changedWhileAway(dir, 300, 150, kvstore.Partitions(3))
	release := kvstore.HoldOverlaid()
	defer release()

	s := e.open(dir, small)
	_, wasCurrent, err := kvstore.FileCheckpoint(s)
	require.NoError(t, err)
	// Puts and Deletes through the store, some of keys the delta holds.
	randomOps(t, s, model, 100, rand.New(rand.NewPCG(9, 9)))
	require.Equal(t, model, contents(t, s))
	cp, current, err := kvstore.FileCheckpoint(s)
	require.NoError(t, err)
	require.Equal(t, before, cp)
	require.Equal(t, wasCurrent, current, "the file may not claim to be current before it holds the delta")

	release()
	end := e.endOffsets()
	awaitFileAt(t, s, end)
	_, current, err = kvstore.FileCheckpoint(s)
	require.NoError(t, err)
	for p, at := range current {
		require.True(t, at.After(wasCurrent[p]), "partition %d: current %v, was %v", p, at, wasCurrent[p])
	}
	require.Equal(t, model, contents(t, s))
	require.NoError(t, s.Close())
	require.Equal(t, model, contents(t, e.open(dir)))
}

func TestADeltaWithKeysAnotherPartitionerPlacedIsInTheFileWhenOpenReturns(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	e.seeded(dir, 50, kvstore.Partitions(6))
	// librdkafka's default partitioner: most keys land on a partition
	// other than the one this store's (murmur2) picks, where Get would not
	// look for them in memory.
	w := e.foreignProducer(librdkafkaCRC32)
	keys := w.users(60, "crc32")
	release := kvstore.HoldOverlaid()
	defer release()

	s := e.open(dir)
	require.Equal(t, "delta", s.Stats().Restore.Mode)
	cp, _, err := kvstore.FileCheckpoint(s)
	require.NoError(t, err)
	require.Equal(t, e.endOffsets(), cp)
	for _, k := range keys {
		got, ok, err := s.Get(ctxT(t), k)
		require.NoError(t, err)
		require.True(t, ok, k)
		require.Equal(t, "crc32", got.FirstName)
	}
}
