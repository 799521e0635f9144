package kvstore

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/changelog"
)

// putRaw writes key=value into partition 0's bucket through updateCache,
// as the applier does.
func putRaw(t testing.TB, s *Store[struct{}], key string, value []byte) {
	t.Helper()
	require.NoError(t, s.updateCache(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(partBucket(0))
		if err != nil {
			return err
		}
		return b.Put([]byte(key), value)
	}))
}

// Built with a bbolt other than the verified one, Gets read in transactions
// of their own through bbolt's API: no snapshot, no page walk, the same
// answers.
func TestWithAnUnverifiedBboltGetsReadThroughBboltsAPI(t *testing.T) {
	defer func(v bool) { snapsVerified = v }(snapsVerified)
	snapsVerified = false
	s := bareStore(t)
	for i := range 500 { // enough for a bucket of its own pages
		putRaw(t, s, fmt.Sprintf("k%04d", i), bytes.Repeat([]byte{byte(i)}, 40))
	}
	for i := range 500 {
		v, ok, err := s.lookup(fmt.Sprintf("k%04d", i))
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, bytes.Repeat([]byte{byte(i)}, 40), v)
	}
	_, ok, err := s.lookup("absent")
	require.NoError(t, err)
	require.False(t, ok)
	require.Nil(t, s.snaps.cur.Load(), "no shared snapshot is begun")
}

// Gets share one read snapshot; a write retires it before it begins, no
// snapshot is begun while it is under way, and the next Get sees what it
// wrote.
func TestAWriteRetiresTheGetsSnapshot(t *testing.T) {
	s := bareStore(t)
	putRaw(t, s, "k", []byte("v1"))
	v, ok, err := s.lookup("k")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, []byte("v1"), v)
	first := s.snaps.cur.Load()
	require.NotNil(t, first, "a Get begins a snapshot")
	_, _, err = s.lookup("k")
	require.NoError(t, err)
	require.Same(t, first, s.snaps.cur.Load(), "the next Get uses it")

	require.NoError(t, s.updateCache(func(tx *bolt.Tx) error {
		require.Nil(t, s.snaps.cur.Load(), "retired before the write")
		require.Zero(t, first.refs.Load(), "and rolled back: no Get holds it")
		require.Nil(t, s.snaps.acquire(s.db, s.reps.all), "none is begun during the write")
		return tx.Bucket(partBucket(0)).Put([]byte("k"), []byte("v2"))
	}))
	v, ok, err = s.lookup("k")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, []byte("v2"), v, "a Get after the write sees it")
	require.NotSame(t, first, s.snaps.cur.Load())
}

// bbolt remaps its file when a commit grows it past the mapping, and the
// remap waits for every read transaction: writes that grow the file many
// times over while Gets run on every core must not wait on the Gets'
// snapshot, and every Get sees every write that ended before it began.
func TestWritesThatGrowTheFileAreNotBlockedByGets(t *testing.T) {
	s := bareStore(t)
	putRaw(t, s, "k", []byte("0"))
	var stop atomic.Bool
	var committed atomic.Int64 // last round whose write has ended
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				want := committed.Load()
				v, ok, err := s.lookup("k")
				if err != nil || !ok {
					errs <- fmt.Errorf("lookup: %v %v", ok, err)
					return
				}
				var got int64
				fmt.Sscan(string(v), &got)
				if got < want {
					errs <- fmt.Errorf("read %d after write %d ended", got, want)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		filler := bytes.Repeat([]byte("x"), 4000)
		for round := int64(1); round <= 40; round++ {
			err := s.updateCache(func(tx *bolt.Tx) error {
				return tx.Bucket(partBucket(0)).Put([]byte("k"), fmt.Append(nil, round))
			})
			if err != nil {
				errs <- err
				return
			}
			committed.Store(round)
			err = s.updateCache(func(tx *bolt.Tx) error { // 1.6 MB more file
				b, err := tx.CreateBucketIfNotExists([]byte("filler"))
				if err != nil {
					return err
				}
				for i := range 400 {
					if err := b.Put(fmt.Appendf(nil, "%04d-%04d", round, i), filler); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				errs <- err
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		panic("writes blocked: a Gets' snapshot held the remap") // the cleanup would wait on them too
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	fi, err := os.Stat(s.db.Path())
	require.NoError(t, err)
	require.Greater(t, fi.Size(), int64(32<<20), "the file grew past several mappings")
}

// Damage that appears under the Gets' snapshot (the file was checked when
// it was opened) is an error wrapping errDamaged, and marks the store
// damaged (the follower rebuilds the file), never a crash.
func TestDamageUnderTheSnapshotIsAnError(t *testing.T) {
	path := bulkLoaded(t, 20_000)
	fp := pagesOf(t, path)
	db, _, err := openAndReadMeta(path, time.Second)
	require.NoError(t, err)
	s := &Store[struct{}]{
		cfg:    defaultConfig(),
		topic:  "t",
		info:   changelog.TopicInfo{Name: "t", Partitions: 2, DeleteRetention: time.Hour},
		log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		part:   PartitionerMurmur2.hasher(),
		reps:   newReplicas(2, nil),
		opened: true,
		db:     db,
	}
	t.Cleanup(func() {
		s.snaps.drop()
		db.Close()
	})
	var keys []string
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{partBucket(0), partBucket(1)} {
			require.NoError(t, tx.Bucket(b).ForEach(func(k, _ []byte) error {
				keys = append(keys, string(k))
				return nil
			}))
		}
		return nil
	}))
	for _, k := range keys {
		_, ok, err := s.lookup(k)
		require.NoError(t, err)
		require.True(t, ok, k)
	}
	require.NotNil(t, s.snaps.cur.Load(), "the Gets read through a snapshot")

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	poke(t, f, fp.leaf[5]*fp.ps+8, u16(freelistPageFlag))
	require.NoError(t, f.Close())
	var damaged error
	for _, k := range keys {
		if _, _, err := s.lookup(k); err != nil {
			damaged = err
			break
		}
	}
	require.ErrorIs(t, damaged, errDamaged)
	require.Contains(t, damaged.Error(), fmt.Sprintf("page %d: type 0x10 where a branch or leaf page belongs", fp.leaf[5]))
	require.True(t, s.damaged.Load(), "the follower is told to rebuild")
}

// Every write to the store's file once Open has returned must go through
// updateCache, or a Gets' snapshot could outlive the write's start and
// block its commit's remap for good (TestWritesThatGrowTheFileAreNotBlockedByGets).
// This catches a new write path that calls bbolt or safeUpdate on s.db
// directly.
func TestEveryWriteToTheStoresFileGoesThroughUpdateCache(t *testing.T) {
	direct := regexp.MustCompile(`safeUpdate\(s\.db\b|s\.db\.(Update|Batch|Begin)\(`)
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || f == "readsnap.go" {
			continue
		}
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		for i, line := range strings.Split(string(src), "\n") {
			if direct.MatchString(line) {
				t.Errorf("%s:%d writes to s.db without updateCache: %s", f, i+1, strings.TrimSpace(line))
			}
		}
	}
}
