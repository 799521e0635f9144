package kvstore_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/kvstore"
)

// cachePath is where a store keeps its cache file in dir.
func (e *env) cachePath(dir string) string { return filepath.Join(dir, e.topic+".db") }

// tamper rewrites one meta or offsets entry of a closed cache file.
func tamper(t *testing.T, path, bucket, key string, val []byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put([]byte(key), val) }))
	require.NoError(t, db.Close())
}

func be64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

// seeded opens a store on dir, writes n random operations, closes it, and
// returns the model of what it wrote.
func (e *env) seeded(dir string, n int, extra ...kvstore.Option) map[string]User {
	s, err := kvstore.Open[User](ctxT(e.t), e.topic, e.opts(dir, extra...)...)
	require.NoError(e.t, err)
	model := map[string]User{}
	randomOps(e.t, s, model, n, rand.New(rand.NewPCG(11, uint64(n))))
	require.NoError(e.t, s.Close())
	return model
}

func requireFullRestore(t *testing.T, s *kvstore.Store[User], g kvstore.Guard, reason string) {
	t.Helper()
	requireRestore(t, s, "full", g, reason)
}

// requireRestore checks the restore Open made: its mode, the guard behind
// it, and that no other guard fired.
func requireRestore(t *testing.T, s *kvstore.Store[User], mode string, g kvstore.Guard, reason string) {
	t.Helper()
	st := s.Stats().Restore
	require.Equal(t, mode, st.Mode, "reason: %s", st.Reason)
	require.Equal(t, g, st.Guard, "reason: %s", st.Reason)
	require.Contains(t, st.Reason, reason)
	require.Equal(t, map[kvstore.Guard]int64{g: 1}, s.Stats().Guards)
}

func TestACacheReopenedUnchangedRestoresOnlyTheDelta(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	model := e.seeded(dir, 200)
	s := e.open(dir)
	require.Equal(t, "delta", s.Stats().Restore.Mode)
	require.Zero(t, s.Stats().Restore.Records)
	require.Empty(t, s.Stats().Guards)
	require.Equal(t, model, contents(t, s))
}

func TestATopicDeletedAndRecreatedIsDetectedByItsID(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("kfake's DeleteTopic; TestRealTopicDeletedAndRecreatedIsDetectedByItsTopicID covers a real broker")
	dir := t.TempDir()
	e.seeded(dir, 100)
	require.NoError(t, e.cluster.Kafka().DeleteTopic(e.topic))

	s := e.open(dir) // creates the topic again: a new topic ID
	requireFullRestore(t, s, kvstore.GuardTopicRecreated, "topic ID changed")
	require.Empty(t, contents(t, s), "nothing of the old topic may survive")
}

func TestACheckpointBelowTheLogStartRebuilds(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("DeleteRecords moves the log start offset")
	dir := t.TempDir()
	e.seeded(dir, 100)
	w := e.open("")
	// Records the cache never saw, then deleted before it could: a gap.
	randomOps(t, w, map[string]User{}, 10, rand.New(rand.NewPCG(1, 1)))
	acked(t)(w.Put(ctxT(t), "after", User{FirstName: "kept"}))
	end := e.endOffsets()[0]
	require.NoError(t, e.cluster.Kafka().DeleteRecords(e.topic, 0, end-1)) // keep only "after"

	s := e.open(dir)
	// The topic's one partition is refused: that is the whole cache (with
	// more partitions, the table below rebuilds one alone).
	requireRestore(t, s, "full", kvstore.GuardBelowLogStart, "below the log start offset")
	require.Equal(t, map[string]User{"after": {FirstName: "kept"}}, contents(t, s))
}

// A cache whose meta a guard refuses (guards_internal_test.go has the
// decision itself) is rebuilt from the topic, whole.
func TestACacheWhoseMetaAGuardRefusesIsRebuilt(t *testing.T) {
	for _, c := range []struct {
		name, bucket, key string
		val               []byte
		mode              string // "partition": that partition alone was rebuilt
		guard             kvstore.Guard
		reason            string
	}{
		{"a checkpoint above the end offset, one of two partitions", "offsets", string([]byte{0, 0, 0, 0}), be64(1_000_000),
			"partition", kvstore.GuardAboveEnd, "above the end offset"},
		{"offline longer than delete.retention.ms", "current", string([]byte{0, 0, 0, 0}), be64(time.Now().Add(-2 * time.Minute).UnixMilli()),
			"full", kvstore.GuardRetentionExceeded, "longer than delete.retention.ms"},
		{"one of two partitions behind longer than delete.retention.ms", "current", string([]byte{0, 0, 0, 1}), be64(time.Now().Add(-2 * time.Minute).UnixMilli()),
			"partition", kvstore.GuardRetentionExceeded, "partition 1 last current"},
		{"another format version", "meta", "format", binary.BigEndian.AppendUint32(nil, 99),
			"full", kvstore.GuardFormat, "format version 99"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			dir := t.TempDir()
			opts := []kvstore.Option{kvstore.TopicConfig("delete.retention.ms", "60000")}
			if strings.Contains(c.name, "of two partitions") {
				opts = append(opts, kvstore.Partitions(2))
			}
			model := e.seeded(dir, 100, opts...)
			tamper(t, e.cachePath(dir), c.bucket, c.key, c.val)

			s := e.open(dir)
			requireRestore(t, s, c.mode, c.guard, c.reason)
			require.Equal(t, model, contents(t, s))
		})
	}
}

// The resurrection case end to end: a key deleted while the cache was
// offline, whose value and tombstone compaction then removed, must not come
// back from the old cache.
func TestAKeyDeletedWhileOfflineDoesNotComeBackAfterCompaction(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("forced compaction")
	ctx := ctxT(t)
	dir := t.TempDir()
	opts := kvstore.TopicConfig("delete.retention.ms", "50")
	a, err := kvstore.Open[User](ctx, e.topic, e.opts(dir, opts)...)
	require.NoError(t, err)
	acked(t)(a.Put(ctx, "k", User{FirstName: "doomed"}))
	acked(t)(a.Put(ctx, "other", User{FirstName: "stays"}))
	require.NoError(t, a.Close())

	b := e.open("")
	acked(t)(b.Delete(ctx, "k"))
	acked(t)(b.Put(ctx, "last", User{FirstName: "newest"})) // compaction keeps the last batch
	require.NoError(t, b.Close())
	// Compact until neither k's value nor its tombstone is left in the topic.
	require.Eventually(t, func() bool {
		e.cluster.Kafka().Compact()
		return !e.topicHasKey("k")
	}, 10*time.Second, 20*time.Millisecond)

	s := e.open(dir)
	require.Equal(t, "full", s.Stats().Restore.Mode)
	_, ok, err := s.Get(ctx, "k")
	require.NoError(t, err)
	require.False(t, ok, "a deleted key came back")
	require.Equal(t, map[string]User{"other": {FirstName: "stays"}, "last": {FirstName: "newest"}}, contents(t, s))
}

// topicHasKey reads the whole topic and says whether any record has key.
func (e *env) topicHasKey(key string) bool {
	e.t.Helper()
	ctx := ctxT(e.t)
	end := e.endOffsets()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...), kgo.ConsumeTopics(e.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	require.NoError(e.t, err)
	defer cl.Close()
	found := false
	for done := false; !done; {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollFetches(pctx)
		cancel()
		if fs.Empty() {
			break // nothing left to read
		}
		fs.EachRecord(func(r *kgo.Record) {
			found = found || string(r.Key) == key
			done = done || r.Offset >= end[r.Partition]-1
		})
	}
	return found
}

func TestAPartitionCountChangeRebuilds(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	model := e.seeded(dir, 200, kvstore.Partitions(2))
	_, err := e.admin().CreatePartitions(ctxT(t), 1, e.topic)
	require.NoError(t, err)

	s := e.open(dir)
	requireFullRestore(t, s, kvstore.GuardPartitionsChanged, "partition count changed from 2 to 3")
	require.Equal(t, model, contents(t, s))
}

func TestAnUnreadableCacheIsMovedAsideAndRebuilt(t *testing.T) {
	damage := map[string]func(t *testing.T, path string){
		"garbage": func(t *testing.T, path string) {
			junk := bytes.Repeat([]byte("not a bbolt file "), 4096)
			require.NoError(t, os.WriteFile(path, junk, 0o600))
		},
		"truncated": func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(path, fi.Size()/3))
		},
		"empty": func(t *testing.T, path string) { require.NoError(t, os.Truncate(path, 0)) },
	}
	for name, hurt := range damage {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			dir := t.TempDir()
			model := e.seeded(dir, 300)
			hurt(t, e.cachePath(dir))

			log, logs := captureLogs()
			s := e.open(dir, kvstore.Logger(log))
			requireFullRestore(t, s, kvstore.GuardCorrupt, "unreadable")
			require.Equal(t, model, contents(t, s))
			aside, _ := filepath.Glob(e.cachePath(dir) + ".corrupt-*")
			require.Len(t, aside, 1, "the damaged file is kept aside")
			require.Contains(t, logs.String(), "moved aside")
		})
	}
}

func TestACacheLockedByAnotherProcessFailsAfterABoundedWait(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	e.seeded(dir, 10)
	held, err := bolt.Open(e.cachePath(dir), 0o600, nil) // a second open file: flock conflicts
	require.NoError(t, err)
	defer held.Close()

	began := time.Now()
	_, err = kvstore.Open[User](ctxT(t), e.topic, e.opts(dir, kvstore.LockTimeout(200*time.Millisecond))...)
	require.ErrorIs(t, err, kvstore.ErrCacheLocked)
	require.Contains(t, err.Error(), e.cachePath(dir))
	require.Less(t, time.Since(began), 5*time.Second)
}

// recorder is a RestoreListener that keeps what it is told.
type recorder struct {
	mu      sync.Mutex
	start   kvstore.RestoreStart
	batches []kvstore.BatchRestored
	end     *kvstore.RestoreStats
}

func (r *recorder) OnRestoreStart(s kvstore.RestoreStart) { r.mu.Lock(); r.start = s; r.mu.Unlock() }
func (r *recorder) OnBatchRestored(b kvstore.BatchRestored) {
	r.mu.Lock()
	r.batches = append(r.batches, b)
	r.mu.Unlock()
}
func (r *recorder) OnRestoreEnd(s kvstore.RestoreStats) { r.mu.Lock(); r.end = &s; r.mu.Unlock() }

func TestTheRestoreListenerHearsStartEveryBatchAndEnd(t *testing.T) {
	for _, mode := range []string{"full", "delta"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			dir := t.TempDir()
			e.seeded(dir, 50, kvstore.Partitions(3))
			if mode == "full" {
				dir = t.TempDir()
			} else {
				w := e.open("")
				randomOps(t, w, map[string]User{}, 30, rand.New(rand.NewPCG(5, 5)))
			}
			end := e.endOffsets()
			var rec recorder
			log, logs := captureLogs()
			s := e.open(dir, kvstore.OnRestore(&rec), kvstore.ProgressInterval(time.Nanosecond), kvstore.Logger(log))
			st := s.Stats().Restore

			rec.mu.Lock()
			defer rec.mu.Unlock()
			require.Equal(t, mode, rec.start.Mode)
			require.Len(t, rec.start.Partitions, 3)
			for _, pr := range rec.start.Partitions {
				require.Equal(t, end[pr.Partition], pr.End)
			}
			var n int64
			for _, b := range rec.batches {
				n += int64(b.Records)
			}
			require.Equal(t, st.Records, n)
			require.NotNil(t, rec.end)
			require.Equal(t, st, *rec.end)
			require.Positive(t, st.Records)
			require.Contains(t, logs.String(), "percent=")
			require.Contains(t, logs.String(), "records_per_sec=")
		})
	}
}

// Only the newest damaged file is kept aside: a disk that keeps damaging
// the cache does not fill up with copies of it.
func TestOnlyTheNewestDamagedCacheFileIsKeptAside(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	model := e.seeded(dir, 50)
	path := e.cachePath(dir)
	for _, old := range []string{".corrupt-1", ".corrupt-2"} {
		require.NoError(t, os.WriteFile(path+old, []byte("an older damaged file"), 0o600))
	}
	require.NoError(t, os.WriteFile(path, []byte("garbage where the cache was"), 0o600))
	s := e.open(dir)
	require.Equal(t, model, contents(t, s))
	aside, _ := filepath.Glob(path + ".corrupt-*")
	require.Len(t, aside, 1)
	got, err := os.ReadFile(aside[0])
	require.NoError(t, err)
	require.Equal(t, "garbage where the cache was", string(got), "the one kept is the newest")
}

// At Open, a checkpoint below its partition's log start rebuilds that
// partition alone; the other partitions carry on from their checkpoints.
func TestAtOpenACheckpointBelowTheLogStartRebuildsThatPartitionOnly(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("DeleteRecords moves the log start offset")
	dir := t.TempDir()
	e.seeded(dir, 200, kvstore.Partitions(2))
	w := e.open("")
	for i := range 20 {
		acked(t)(w.Put(ctxT(t), fmt.Sprint("later-", i), User{FirstName: "later"}))
	}
	end := e.endOffsets()
	require.NoError(t, e.cluster.Kafka().DeleteRecords(e.topic, 0, end[0]-1)) // partition 0 keeps its last record

	s := e.open(dir)
	requireRestore(t, s, "partition", kvstore.GuardBelowLogStart, "partition 0 is below the log start offset")
	fresh := e.open("")
	require.Equal(t, contents(t, fresh), contents(t, s))
	require.Less(t, s.Stats().Restore.Records, fresh.Stats().Restore.Records,
		"partition 1 was a delta, not read again from its start")
}

// Open checks the cache file while it asks the broker and the registry: an
// Open that fails on the broker meanwhile lets go of the file, and the next
// Open restores from it (a delta).
func TestAnOpenFailingOnTheBrokerLetsGoOfTheCacheFile(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	model := e.seeded(dir, 50)
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // the broker is never asked
		_, err := kvstore.Open[User](ctx, e.topic, e.opts(dir)...)
		require.Error(t, err)
	}
	s := e.open(dir, kvstore.LockTimeout(2*time.Second))
	require.Equal(t, "delta", s.Stats().Restore.Mode, s.Stats().Restore.Reason)
	require.Equal(t, model, contents(t, s))
}
