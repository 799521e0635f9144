package pagewriter

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/internal/boltcheck"
	"github.com/compactkv/compactkv/internal/boltfmt"
)

// contents is what a file holds: bucket name, then key, then value.
type contents map[string]map[string][]byte

// randomContents draws n keys over the given buckets: keys of 1 to 24 bytes
// from few distinct bytes (long shared prefixes), a value of a few bytes,
// an empty one now and then, and every bigEvery-th one large enough to
// overflow a page.
func randomContents(seed uint64, n int, buckets []string, bigEvery int) contents {
	rng := rand.New(rand.NewPCG(seed, 11))
	c := contents{}
	for i := range n {
		b := buckets[rng.IntN(len(buckets))]
		k := make([]byte, 1+rng.IntN(24))
		for j := range k {
			k[j] = "ab\x00\xff"[rng.IntN(4)]
		}
		v := fmt.Appendf(nil, "value-%d", i)
		switch {
		case bigEvery > 0 && i%bigEvery == 0:
			v = bytes.Repeat(v, 500+rng.IntN(20000))
		case rng.IntN(50) == 0:
			v = []byte{}
		}
		if c[b] == nil {
			c[b] = map[string][]byte{}
		}
		c[b][string(k)] = v
	}
	return c
}

// data hands c over in order, counting the calls in calls (if not nil).
func (c contents) data(calls *int) Data {
	return func(w Writer) error {
		if calls != nil {
			*calls++
		}
		for _, b := range slices.Sorted(maps.Keys(c)) {
			if err := w.Bucket([]byte(b)); err != nil {
				return err
			}
			for _, k := range slices.Sorted(maps.Keys(c[b])) {
				if err := w.Put([]byte(k), c[b][k]); err != nil {
					return err
				}
			}
		}
		return nil
	}
}

// read returns every key of every bucket of db.
func read(t testing.TB, db *bolt.DB) contents {
	t.Helper()
	got := contents{}
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			m := map[string][]byte{}
			got[string(name)] = m
			return b.ForEach(func(k, v []byte) error {
				m[string(k)] = bytes.Clone(v)
				return nil
			})
		})
	}))
	return got
}

// requireTxCheck runs bbolt's own consistency check over the whole file.
func requireTxCheck(t testing.TB, db *bolt.DB) {
	t.Helper()
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}))
}

// fileMeta is what the meta page bbolt uses says about the file at path.
type fileMeta struct{ pageSize, freelist, hwm, txid uint64 }

func readMeta(t testing.TB, path string) fileMeta {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	_, _, m0, _ := boltfmt.ReadMeta(b)
	var best fileMeta
	for i := range uint64(2) {
		_, _, m, ok := boltfmt.ReadMeta(b[i*uint64(m0.PageSize):])
		require.True(t, ok, "meta page %d checksum", i)
		if fm := (fileMeta{uint64(m.PageSize), m.Freelist, m.HWM, m.TxID}); i == 0 || fm.txid > best.txid {
			best = fm
		}
	}
	return best
}

func open(t testing.TB, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	require.NoError(t, err)
	return db
}

// The page writer's file is one bbolt itself would accept, at every page
// size a machine may have: boltcheck and tx.Check find nothing, the file
// carries a freelist page (bbolt never walks it at open), it holds exactly
// what was written, and it stays so while bbolt writes to it: a new bucket,
// then random puts and deletes.
func TestWritePassesTxCheckAtEveryPageSize(t *testing.T) {
	buckets := []string{"part-00000", "part-00001", "part-00002"}
	for _, ps := range []int{1 << 10, 2 << 10, 4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10} {
		t.Run(fmt.Sprintf("%dKiB", ps>>10), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.db")
			model := randomContents(uint64(ps), 30_000, buckets, 997)
			var logs bytes.Buffer
			require.NoError(t, Write(path, model.data(nil), Options{PageSize: ps, Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
			require.Empty(t, logs.String(), "the page writer's file must not need the fallback")
			require.NoError(t, boltcheck.Check(path))
			m := readMeta(t, path)
			require.Equal(t, uint64(1), m.txid, "the page writer wrote the file, not bbolt")
			require.Less(t, m.freelist, m.hwm, "the file must carry a freelist page")
			require.Greater(t, m.hwm, uint64(20), "enough pages for branch levels")

			db := open(t, path)
			require.Equal(t, ps, db.Info().PageSize)
			requireTxCheck(t, db)
			require.Equal(t, model, read(t, db))

			rng := rand.New(rand.NewPCG(9, uint64(ps)))
			require.NoError(t, db.Update(func(tx *bolt.Tx) error {
				b, err := tx.CreateBucket([]byte("meta"))
				model["meta"] = map[string][]byte{"k": []byte("v")}
				if err == nil {
					err = b.Put([]byte("k"), []byte("v"))
				}
				return err
			}))
			for range 3 {
				require.NoError(t, db.Update(func(tx *bolt.Tx) error {
					for i := range 3000 {
						name := buckets[rng.IntN(len(buckets))]
						b, k := tx.Bucket([]byte(name)), fmt.Appendf(nil, "key-%05d", rng.IntN(5000))
						if rng.IntN(3) == 0 {
							delete(model[name], string(k))
							if err := b.Delete(k); err != nil {
								return err
							}
							continue
						}
						v := fmt.Appendf(nil, "upd-%d", i)
						model[name][string(k)] = v
						if err := b.Put(k, v); err != nil {
							return err
						}
					}
					return nil
				}))
				requireTxCheck(t, db)
			}
			require.Equal(t, model, read(t, db))
			require.NoError(t, db.Close())
			require.NoError(t, boltcheck.Check(path), "a file bbolt updated must pass the check")
		})
	}
}

// Files at the edges of the layout: nothing at all, an empty bucket, one
// key, thousands of elements in a page, a tree several branch levels deep,
// keys so long that two do not fit in a page (the branch pages above them
// take overflow pages), keys of bbolt's largest size.
func TestWriteLaysOutTheEdgeCases(t *testing.T) {
	many := func(n, klen int) map[string][]byte {
		m := map[string][]byte{}
		for i := range n {
			k := fmt.Appendf(nil, "%0*d", klen, i)
			m[string(k)] = []byte{}
		}
		return m
	}
	for _, tc := range []struct {
		name string
		ps   int
		c    contents
	}{
		{"no buckets", 4 << 10, contents{}},
		{"an empty bucket", 4 << 10, contents{"a": {}, "b": {"k": []byte("v")}}},
		{"one key", 4 << 10, contents{"a": {"k": []byte("v")}}},
		{"small elements in large pages", 64 << 10, contents{"a": many(20_000, 1)}},
		{"deep branches", 1 << 10, contents{"a": many(60_000, 120)}},
		{"largest keys", 4 << 10, contents{"a": {string(bytes.Repeat([]byte{'k'}, bolt.MaxKeySize)): []byte("v"), "l": []byte("w")}}},
		{"keys longer than half a page", 1 << 10, contents{"a": many(50, 600)}},
		{"keys longer than half a page, 4KiB", 4 << 10, contents{"a": many(50, 3000)}},
		{"keys longer than a page", 4 << 10, contents{"a": many(20, 5000), "b": many(3, bolt.MaxKeySize)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.db")
			require.NoError(t, Write(path, tc.c.data(nil), Options{PageSize: tc.ps}))
			require.NoError(t, verifyPages(path))
			require.Equal(t, uint64(1), readMeta(t, path).txid, "the page writer wrote the file, not bbolt")
			db := open(t, path)
			defer db.Close()
			requireTxCheck(t, db)
			got := read(t, db)
			for b, kv := range tc.c {
				for k, v := range kv {
					require.Equal(t, v, got[b][k], "bucket %q key %.20q", b, k)
				}
				require.Len(t, got[b], len(kv))
			}
			require.Len(t, got, len(tc.c))
			// bbolt keeps writing to it: a long key into every bucket, and
			// a new bucket.
			require.NoError(t, db.Update(func(tx *bolt.Tx) error {
				for b := range tc.c {
					if err := tx.Bucket([]byte(b)).Put(bytes.Repeat([]byte{'m'}, min(tc.ps, bolt.MaxKeySize)), []byte("new")); err != nil {
						return err
					}
				}
				_, err := tx.CreateBucket([]byte("new"))
				return err
			}))
			requireTxCheck(t, db)
		})
	}
}
