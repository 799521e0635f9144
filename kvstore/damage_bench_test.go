package kvstore

// Costs of the damage checks and of the synced freelist, each beside the
// old way measured in the same run:
//
//	go test -run '^$' -bench 'OpenCheck|FollowerCommit' -benchtime 10x ./kvstore/ -kvbench.keys 1000000

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

var benchKeys = flag.Int("kvbench.keys", 1_000_000, "keys in the cache file of the open and commit benchmarks")

// benchCache bulk-loads n random 16-byte keys with 44-byte values (the
// shape of BenchmarkRestoreFull's records) into one partition, adds the meta
// bucket as bulkLoad does, and returns the path and the keys.
func benchCache(b *testing.B, dir string, n int) (string, [][]byte) {
	b.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	srt := newSorter(256<<20, dir, "b")
	keys := make([][]byte, n)
	val := bytes.Repeat([]byte{'v'}, 44)
	for i := range keys {
		keys[i] = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, rng.Uint64()), rng.Uint64())
		require.NoError(b, srt.add(0, keys[i], val))
	}
	path := filepath.Join(dir, "b.db")
	require.NoError(b, srt.writeBolt(path, partBucket))
	db, err := openBolt(path, time.Second, true)
	require.NoError(b, err)
	require.NoError(b, db.Update(func(tx *bolt.Tx) error {
		return writeMeta(tx, "b", [16]byte{1}, 1, map[int32]int64{0: int64(n)}, time.Now())
	}))
	require.NoError(b, db.Close())
	return path, keys
}

// unsyncedCopy copies the file at path and commits one transaction to the
// copy with NoFreelistSync, as the store did before: the copy then has no
// freelist page, and opening it walks every page.
func unsyncedCopy(b *testing.B, path string) string {
	b.Helper()
	cp := path + ".unsynced"
	data, err := os.ReadFile(path)
	require.NoError(b, err)
	require.NoError(b, os.WriteFile(cp, data, 0o600))
	db, err := bolt.Open(cp, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	require.NoError(b, err)
	require.NoError(b, db.Update(func(tx *bolt.Tx) error { return putCurrent(tx, allAt(1, time.Now())) }))
	require.NoError(b, db.Close())
	return cp
}

// BenchmarkOpenCheck: what opening an existing cache costs. "old" is the
// store's open before (NoFreelistSync: bbolt walks every page to find the
// free ones, then readMeta); "new" is openAndReadMeta now (a read-only open
// for the lock, checkFile, an open that reads the freelist page, readMeta);
// the other rows are its parts, and tx.Check for comparison. (checkFile
// mapped and read: BenchmarkCheck in internal/boltcheck.)
func BenchmarkOpenCheck(b *testing.B) {
	for _, layout := range []string{"bulk-loaded", "after-updates"} {
		b.Run("layout="+layout, func(b *testing.B) { benchOpenCheck(b, layout == "after-updates") })
	}
}

// scatter rewrites random keys of the cache at path in many transactions,
// as a follower does over time, so that its leaves no longer lie in key
// order in the file.
func scatter(b *testing.B, path string, keys [][]byte) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, FreelistType: bolt.FreelistMapType})
	require.NoError(b, err)
	rng := rand.New(rand.NewPCG(2, 2))
	val := bytes.Repeat([]byte{'u'}, 44)
	for range 200 {
		recs := make([][]byte, 1000)
		for i := range recs {
			recs[i] = keys[rng.IntN(len(keys))]
		}
		slices.SortFunc(recs, bytes.Compare)
		require.NoError(b, db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(partBucket(0))
			for _, k := range recs {
				if err := bk.Put(k, val); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	require.NoError(b, db.Close())
}

func benchOpenCheck(b *testing.B, scattered bool) {
	dir := b.TempDir()
	path, keys := benchCache(b, dir, *benchKeys)
	if scattered {
		scatter(b, path, keys)
	}
	old := unsyncedCopy(b, path)
	fi, err := os.Stat(path)
	require.NoError(b, err)
	b.Logf("%d keys, %d MiB file", *benchKeys, fi.Size()>>20)
	b.Run("old=walk+readMeta", func(b *testing.B) {
		for b.Loop() {
			db, err := bolt.Open(old, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType, NoSync: true})
			require.NoError(b, err)
			_, err = readMeta(db)
			require.NoError(b, err)
			require.NoError(b, db.Close())
		}
	})
	b.Run("new=openAndReadMeta", func(b *testing.B) {
		for b.Loop() {
			db, _, err := openAndReadMeta(path, time.Second)
			require.NoError(b, err)
			require.NoError(b, db.Close())
		}
	})
	b.Run("part=checkFile", func(b *testing.B) {
		for b.Loop() {
			require.NoError(b, checkFile(path))
		}
	})
	b.Run("part=openBolt+readMeta", func(b *testing.B) {
		for b.Loop() {
			db, err := openBolt(path, time.Second, true)
			require.NoError(b, err)
			_, err = readMeta(db)
			require.NoError(b, err)
			require.NoError(b, db.Close())
		}
	})
	b.Run("compare=tx.Check", func(b *testing.B) {
		db, err := openBolt(path, time.Second, true)
		require.NoError(b, err)
		defer db.Close()
		for b.Loop() {
			require.NoError(b, db.View(func(tx *bolt.Tx) error {
				for err := range tx.Check() {
					return err
				}
				return nil
			}))
		}
	})
}

// BenchmarkFollowerCommit: one follower transaction (what applyBatches
// commits: a poll's records sorted by key, the partition's offset, the
// current time) on a cache of kvbench.keys keys, once with the freelist
// unsynced (before) and once synced (now), both within each iteration (who
// goes first alternates) so that both meet the same disk; with fsync (the follower) and
// without (a delta restore). It reports both times and their ratio.
func BenchmarkFollowerCommit(b *testing.B) {
	dir := b.TempDir()
	path, keys := benchCache(b, dir, *benchKeys)
	old := unsyncedCopy(b, path)
	val := bytes.Repeat([]byte{'w'}, 44)
	for _, batch := range []int{1, 100, 1000} {
		for _, noSync := range []bool{false, true} {
			b.Run(fmt.Sprintf("batch=%d/nosync=%v", batch, noSync), func(b *testing.B) {
				open := func(path string, noFreelistSync bool) *bolt.DB {
					db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: noFreelistSync,
						FreelistType: bolt.FreelistMapType, NoSync: noSync})
					require.NoError(b, err)
					b.Cleanup(func() { db.Close() })
					return db
				}
				dbs := [2]*bolt.DB{open(old, true), open(path, false)}
				var took [2]time.Duration
				rng := rand.New(rand.NewPCG(1, uint64(batch)))
				next := int64(0)
				recs := make([][]byte, batch)
				for it := 0; b.Loop(); it++ {
					for i := range recs {
						recs[i] = keys[rng.IntN(len(keys))]
					}
					slices.SortFunc(recs, bytes.Compare)
					next += int64(batch)
					for o := range 2 {
						j := (o + it) % 2 // who goes first alternates
						db := dbs[j]
						began := time.Now()
						require.NoError(b, db.Update(func(tx *bolt.Tx) error {
							bk := tx.Bucket(partBucket(0))
							for _, k := range recs {
								if err := bk.Put(k, val); err != nil {
									return err
								}
							}
							if err := putOffsets(tx, map[int32]int64{0: next}); err != nil {
								return err
							}
							return putCurrent(tx, allAt(1, time.Now()))
						}))
						took[j] += time.Since(began)
					}
				}
				n := float64(b.N)
				b.ReportMetric(float64(took[0].Microseconds())/n, "old-µs/commit")
				b.ReportMetric(float64(took[1].Microseconds())/n, "new-µs/commit")
				b.ReportMetric(float64(took[1])/float64(took[0]), "new/old")
			})
		}
	}
}
