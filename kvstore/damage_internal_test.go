package kvstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// fillSorter adds n random records over parts partitions (a sixth of them
// tombstones, every bigEvery-th value large enough to overflow a page) and
// returns the model of what is live.
func fillSorter(t testing.TB, srt *sorter, n int, parts int32, bigEvery int, seed uint64) map[string][]byte {
	rng := rand.New(rand.NewPCG(seed, 3))
	model := map[string][]byte{}
	for i := range n {
		p := rng.Int32N(parts)
		k := fmt.Appendf(nil, "key-%08d", rng.IntN(n))
		mk := string(partBucket(p)) + "/" + string(k)
		if rng.IntN(6) == 0 {
			require.NoError(t, srt.add(p, k, nil))
			delete(model, mk)
			continue
		}
		v := fmt.Appendf(nil, "value-%d", i)
		if bigEvery > 0 && i%bigEvery == 0 {
			v = bytes.Repeat(v, 500+rng.IntN(20000))
		}
		require.NoError(t, srt.add(p, k, v))
		model[mk] = v
	}
	return model
}

// boltContents returns every key of the data buckets as "bucket/key".
func boltContents(t testing.TB, db *bolt.DB) map[string][]byte {
	got := map[string][]byte{}
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if bytes.Equal(name, bucketMeta) || bytes.Equal(name, bucketOffsets) || bytes.Equal(name, bucketCurrent) {
				return nil
			}
			return b.ForEach(func(k, v []byte) error {
				got[string(name)+"/"+string(k)] = bytes.Clone(v)
				return nil
			})
		})
	}))
	return got
}

// A bulk load as a full restore does it, at every page size a machine may
// have: the sorter (spilling runs) hands its records to the page writer
// without a fallback, the store adds its meta bucket, and the file passes
// tx.Check and the open check with every live key in its partition's
// bucket. (internal/pagewriter tests the page layout itself, and the
// fallback.)
func TestBulkLoadPassesTxCheckAtEveryPageSize(t *testing.T) {
	for _, ps := range []int{1 << 10, 2 << 10, 4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10} {
		t.Run(fmt.Sprintf("%dKiB", ps>>10), func(t *testing.T) {
			dir := t.TempDir()
			var logs bytes.Buffer
			srt := newSorter(1<<20, dir, "t") // small: spilled runs too
			srt.pageSize = ps
			srt.log = slog.New(slog.NewTextHandler(&logs, nil))
			model := fillSorter(t, srt, 30_000, 3, 997, uint64(ps))
			require.Greater(t, srt.srt.Runs(), 1)
			path := filepath.Join(dir, "c.db")
			require.NoError(t, srt.writeBolt(path, partBucket))
			require.Empty(t, logs.String(), "the page writer's file must not need the fallback")
			left, _ := filepath.Glob(filepath.Join(dir, "t"+runSuffix))
			require.Empty(t, left, "spilled runs are removed once the file is written")

			db, err := openBolt(path, time.Second, false)
			require.NoError(t, err)
			require.Equal(t, ps, db.Info().PageSize)
			require.NoError(t, db.Update(func(tx *bolt.Tx) error {
				return writeMeta(tx, "t", [16]byte{1}, 3, map[int32]int64{0: 1, 1: 2, 2: 3}, time.Now())
			}))
			require.NoError(t, db.View(func(tx *bolt.Tx) error { return <-tx.Check() }), "tx.Check")
			require.Equal(t, model, boltContents(t, db))
			m, err := readMeta(db)
			require.NoError(t, err)
			require.Equal(t, map[int32]int64{0: 1, 1: 2, 2: 3}, m.next)
			require.NoError(t, db.Close())
			require.NoError(t, checkFile(path))
		})
	}
}

// bbolt's page flags, for damaging pages.
const (
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	pageHeaderSize   = 16
)

// poke writes b at off in f.
func poke(t *testing.T, f *os.File, off int64, b []byte) {
	_, err := f.WriteAt(b, off)
	require.NoError(t, err)
}

func u16(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }
func u64(v uint64) []byte { return binary.NativeEndian.AppendUint64(nil, v) }

// filePages is the page size of a bbolt file and its pages by what bbolt
// says they are: branch and leaf pages in use (not the root bucket's), in
// file order, and the high water mark.
type filePages struct {
	ps           int64
	branch, leaf []int64
	hwm          int64
}

func pagesOf(t testing.TB, path string) filePages {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true, Timeout: time.Second})
	require.NoError(t, err)
	defer db.Close()
	fp := filePages{ps: int64(db.Info().PageSize)}
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		root := int(tx.Cursor().Bucket().Root())
		for id := 2; ; id++ {
			p, err := tx.Page(id)
			if err != nil || p == nil {
				fp.hwm = int64(id)
				return err
			}
			switch {
			case id == root:
			case p.Type == "branch":
				fp.branch = append(fp.branch, int64(id))
			case p.Type == "leaf":
				fp.leaf = append(fp.leaf, int64(id))
			}
			id += p.OverflowCount
		}
	}))
	return fp
}

// bulkLoaded writes a bulk-loaded cache file (page writer, then the meta
// bucket as bulkLoad writes it) and returns its path.
func bulkLoaded(t testing.TB, n int) string {
	t.Helper()
	dir := t.TempDir()
	srt := newSorter(64<<20, dir, "t")
	fillSorter(t, srt, n, 2, 0, 1)
	path := filepath.Join(dir, "c.db")
	require.NoError(t, srt.writeBolt(path, partBucket))
	db, err := openBolt(path, time.Second, true)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		return writeMeta(tx, "t", [16]byte{1}, 2, map[int32]int64{0: 1, 1: 1}, time.Now())
	}))
	require.NoError(t, db.Close())
	return path
}

// Opening a damaged cache file returns an error wrapping errDamaged: the
// open check finds the damage before bbolt can panic on it.
// (internal/boltcheck tests every kind of damage the check finds.)
func TestOpeningADamagedFileReturnsErrDamaged(t *testing.T) {
	cases := map[string]func(t *testing.T, f *os.File, fp filePages){
		"two data pages flagged as freelist pages": func(t *testing.T, f *os.File, fp filePages) {
			poke(t, f, fp.leaf[len(fp.leaf)/3]*fp.ps+8, u16(freelistPageFlag))
			poke(t, f, fp.leaf[2*len(fp.leaf)/3]*fp.ps+8, u16(freelistPageFlag))
		},
		"branch page flagged as leaf": func(t *testing.T, f *os.File, fp filePages) {
			poke(t, f, fp.branch[0]*fp.ps+8, u16(leafPageFlag))
		},
		"leaf page flagged as branch": func(t *testing.T, f *os.File, fp filePages) {
			poke(t, f, fp.leaf[1]*fp.ps+8, u16(branchPageFlag))
		},
		"truncated inside the last page": func(t *testing.T, f *os.File, fp filePages) {
			require.NoError(t, f.Truncate(fp.hwm*fp.ps-fp.ps/2))
		},
		"a branch page pointing to itself": func(t *testing.T, f *os.File, fp filePages) {
			b := fp.branch[0]
			poke(t, f, b*fp.ps+pageHeaderSize+8, u64(uint64(b)))
		},
	}
	for name, hurt := range cases {
		t.Run(name, func(t *testing.T) {
			path := bulkLoaded(t, 20_000)
			fp := pagesOf(t, path)
			require.NotEmpty(t, fp.branch)
			require.Greater(t, len(fp.leaf), 10)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			require.NoError(t, err)
			hurt(t, f, fp)
			require.NoError(t, f.Close())

			require.ErrorIs(t, checkFile(path), errDamaged)
			db, _, err := openAndReadMeta(path, time.Second)
			require.Nil(t, db)
			require.Error(t, err)
			require.NotErrorIs(t, err, os.ErrNotExist)
			t.Log(err)
		})
	}
}

// Damage that appears while the file is open (it was checked at open) makes
// a read or a write through safeView or safeUpdate return errDamaged
// instead of crashing the process.
func TestSafeViewAndSafeUpdateTurnDamageIntoAnError(t *testing.T) {
	path := bulkLoaded(t, 20_000)
	fp := pagesOf(t, path)
	db, _, err := openAndReadMeta(path, time.Second)
	require.NoError(t, err)
	defer db.Close()

	// Damage a data leaf under the open database (bbolt's memory map is
	// shared with the file), then read or write every key.
	var keys [][2][]byte
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{partBucket(0), partBucket(1)} {
			require.NoError(t, tx.Bucket(b).ForEach(func(k, _ []byte) error {
				keys = append(keys, [2][]byte{b, bytes.Clone(k)})
				return nil
			}))
		}
		return nil
	}))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	poke(t, f, fp.leaf[5]*fp.ps+8, u16(freelistPageFlag))
	require.NoError(t, f.Close())

	err = safeView(db, func(tx *bolt.Tx) error {
		for _, k := range keys {
			tx.Bucket(k[0]).Get(k[1])
		}
		return nil
	})
	require.ErrorIs(t, err, errDamaged)
	require.Contains(t, err.Error(), "invalid page type")
	err = safeUpdate(db, func(tx *bolt.Tx) error {
		for _, k := range keys {
			if err := tx.Bucket(k[0]).Put(k[1], []byte("x")); err != nil {
				return err
			}
		}
		return nil
	})
	require.ErrorIs(t, err, errDamaged)
	// The database is still usable where it is not damaged.
	require.NoError(t, safeView(db, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get(keyFormat) == nil {
			return errors.New("meta bucket unreadable")
		}
		return nil
	}))
}
