package kvstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// walkAll looks up every key of keys in bucket name both ways, through the
// page walk and through bbolt's Get, and requires the same answer.
func walkAll(t *testing.T, db *bolt.DB, name []byte, keys [][]byte) (found int) {
	t.Helper()
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(name)
		require.NotNil(t, b)
		require.NotZero(t, b.Root(), "not an inline bucket")
		m := mapOf(db, tx)
		for _, k := range keys {
			got, err := m.get(uint64(b.Root()), k)
			require.NoError(t, err, "%q", k)
			want := b.Get(k)
			require.True(t, bytes.Equal(want, got) && (want == nil) == (got == nil), "key %q: walk %q, bbolt %q", k, got, want)
			if got != nil {
				found++
			}
		}
		return nil
	}))
	return found
}

// around returns each key, and keys just below and above it, and the
// extremes: present and absent keys at every position of every page.
func around(keys [][]byte) [][]byte {
	out := [][]byte{{}, {0}, bytes.Repeat([]byte{0xFF}, 40)}
	for _, k := range keys {
		out = append(out, k, append(bytes.Clone(k), 0), k[:len(k)-1])
		if k[len(k)-1] > 0 {
			out = append(out, append(bytes.Clone(k[:len(k)-1]), k[len(k)-1]-1, 0xFF))
		}
	}
	return out
}

// The page walk finds exactly what bbolt's Get finds, present keys and
// absent ones, in files the page writer laid out (full pages, overflow
// pages for big values) and in files bbolt wrote itself in random order
// (half-full pages, deeper trees, a nested bucket's key).
func TestThePageWalkFindsWhatBboltFinds(t *testing.T) {
	t.Run("page writer", func(t *testing.T) {
		dir := t.TempDir()
		srt := newSorter(64<<20, dir, "t")
		model := fillSorter(t, srt, 30_000, 2, 50, 7) // every 50th value big: overflow pages
		path := filepath.Join(dir, "c.db")
		require.NoError(t, srt.writeBolt(path, partBucket))
		db, err := openBolt(path, time.Second, true)
		require.NoError(t, err)
		defer db.Close()
		for p := range int32(2) {
			var keys [][]byte
			require.NoError(t, db.View(func(tx *bolt.Tx) error {
				return tx.Bucket(partBucket(p)).ForEach(func(k, _ []byte) error {
					keys = append(keys, bytes.Clone(k))
					return nil
				})
			}))
			require.Equal(t, len(keys), walkAll(t, db, partBucket(p), keys))
			walkAll(t, db, partBucket(p), around(keys))
		}
		require.NotEmpty(t, model)
	})
	t.Run("bbolt", func(t *testing.T) {
		db, err := openBolt(filepath.Join(t.TempDir(), "c.db"), time.Second, true)
		require.NoError(t, err)
		defer db.Close()
		rng := rand.New(rand.NewPCG(1, 2))
		var keys [][]byte
		for range 10 {
			require.NoError(t, db.Update(func(tx *bolt.Tx) error {
				b, err := tx.CreateBucketIfNotExists([]byte("data"))
				if err != nil {
					return err
				}
				for range 5000 {
					k := fmt.Appendf(nil, "%x", rng.Uint64()>>rng.IntN(64))
					v := bytes.Repeat([]byte{'v'}, rng.IntN(200))
					if rng.IntN(500) == 0 {
						v = bytes.Repeat([]byte{'V'}, 10_000)
					}
					keys = append(keys, k)
					if err := b.Put(k, v); err != nil {
						return err
					}
				}
				_, err = b.CreateBucketIfNotExists([]byte("nested"))
				return err
			}))
		}
		walkAll(t, db, []byte("data"), around(append(keys, []byte("nested"))))
	})
}

// Damage the walk meets is an error wrapping errDamaged, never a crash
// or a loop: each case hurts one page of a page-writer file under an open
// read transaction, and some key's walk must report it.
func TestThePageWalkReportsDamage(t *testing.T) {
	cases := map[string]struct {
		hurt func(t *testing.T, f *os.File, fp filePages)
		want string
	}{
		"a leaf claiming another page's ID": {func(t *testing.T, f *os.File, fp filePages) {
			poke(t, f, fp.leaf[3]*fp.ps, u64(uint64(fp.leaf[4])))
		}, "its header says page"},
		"a leaf flagged as a freelist page": {func(t *testing.T, f *os.File, fp filePages) {
			poke(t, f, fp.leaf[3]*fp.ps+8, u16(freelistPageFlag))
		}, "where a branch or leaf page belongs"},
		"a leaf with more elements than fit": {func(t *testing.T, f *os.File, fp filePages) {
			poke(t, f, fp.leaf[3]*fp.ps+10, u16(0xFFFF))
		}, "elements overrun"},
		"a leaf element pointing past its page": {func(t *testing.T, f *os.File, fp filePages) {
			poke(t, f, fp.leaf[3]*fp.ps+pageHeaderSize+4, []byte{0xFF, 0xFF, 0, 0})
		}, "runs past the page"},
		"a leaf with overflow pages past the file": {func(t *testing.T, f *os.File, fp filePages) {
			poke(t, f, fp.leaf[3]*fp.ps+12, []byte{0xFF, 0xFF, 0xFF, 0})
		}, "overflow pages run past"},
		"a branch pointing to a meta page": {func(t *testing.T, f *os.File, fp filePages) {
			poke(t, f, fp.branch[0]*fp.ps+pageHeaderSize+8, u64(1))
		}, "outside the file's pages"},
		"a branch pointing to itself": {func(t *testing.T, f *os.File, fp filePages) {
			b := fp.branch[0]
			count := make([]byte, 2)
			_, err := f.ReadAt(count, b*fp.ps+10)
			require.NoError(t, err)
			for i := range int64(binary.NativeEndian.Uint16(count)) { // every element
				poke(t, f, b*fp.ps+pageHeaderSize+i*16+8, u64(uint64(b)))
			}
		}, "tree deeper than"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			path := bulkLoaded(t, 20_000)
			fp := pagesOf(t, path)
			db, _, err := openAndReadMeta(path, time.Second)
			require.NoError(t, err)
			defer db.Close()
			tx, err := db.Begin(false)
			require.NoError(t, err)
			defer tx.Rollback()
			var keys [][2][]byte
			for _, name := range [][]byte{partBucket(0), partBucket(1)} {
				require.NoError(t, tx.Bucket(name).ForEach(func(k, _ []byte) error {
					keys = append(keys, [2][]byte{name, bytes.Clone(k)})
					return nil
				}))
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			require.NoError(t, err)
			c.hurt(t, f, fp)
			require.NoError(t, f.Close())

			m := mapOf(db, tx)
			var first error
			for _, k := range keys {
				if _, err := m.get(uint64(tx.Bucket(k[0]).Root()), k[1]); err != nil {
					first = err
					break
				}
			}
			require.ErrorIs(t, first, errDamaged)
			require.ErrorContains(t, first, c.want)
		})
	}
}
