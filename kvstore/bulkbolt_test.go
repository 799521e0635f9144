package kvstore

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// The bbolt file the sorter writes page by page must be one bbolt reads,
// checks and keeps updating like a file it wrote itself: every live key of
// every partition, in its partition's bucket, nothing else.
func TestSorterWritesAValidBoltFile(t *testing.T) {
	for _, tc := range []struct {
		name       string
		n, keys    int
		parts      int32
		limit      int
		bigEvery   int
		keyLenFrom int
	}{
		{"empty", 0, 1, 1, 1 << 30, 0, 1},
		{"one", 1, 1, 1, 1 << 30, 0, 1},
		{"small", 500, 100, 3, 1 << 30, 0, 1},
		{"many pages and levels", 200_000, 150_000, 1, 1 << 30, 0, 16},
		{"spilled runs", 50_000, 20_000, 4, 256 << 10, 0, 1},
		{"overflow values and long keys", 3000, 2000, 2, 1 << 30, 7, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.n), 1))
			dir := t.TempDir()
			srt := newSorter(tc.limit, dir, "t")
			type pk struct {
				p int32
				k string
			}
			model := map[pk][]byte{}
			key := func() []byte {
				k := make([]byte, tc.keyLenFrom+rng.IntN(17))
				for i := range k {
					k[i] = byte(rng.IntN(4)) // few distinct bytes: many prefix ties
				}
				if len(k) < 9 {
					return []byte(fmt.Sprintf("k%07d", rng.IntN(tc.keys)))
				}
				return k
			}
			for i := range tc.n {
				p, k := rng.Int32N(tc.parts), key()
				if rng.IntN(6) == 0 {
					require.NoError(t, srt.add(p, k, nil))
					delete(model, pk{p, string(k)})
					continue
				}
				v := []byte(fmt.Sprintf("value-%d", i))
				if tc.bigEvery > 0 && i%tc.bigEvery == 0 {
					v = bytes.Repeat(v, 1000+rng.IntN(3000))
				}
				if rng.IntN(50) == 0 {
					v = []byte{}
				}
				require.NoError(t, srt.add(p, k, v))
				model[pk{p, string(k)}] = v
			}
			path := filepath.Join(dir, "c.db")
			require.NoError(t, srt.writeBolt(path, partBucket))
			db, err := openBolt(path, 5*time.Second, false)
			require.NoError(t, err)
			defer db.Close()
			check := func() {
				t.Helper()
				got := map[pk][]byte{}
				require.NoError(t, db.View(func(tx *bolt.Tx) error {
					for err := range tx.Check() {
						return err
					}
					return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
						var p int32
						if _, err := fmt.Sscanf(string(name), "part-%05d", &p); err != nil {
							return fmt.Errorf("unexpected bucket %q", name)
						}
						return b.ForEach(func(k, v []byte) error {
							got[pk{p, string(k)}] = bytes.Clone(v)
							return nil
						})
					})
				}))
				require.Equal(t, len(model), len(got))
				for k, v := range model {
					require.Equal(t, v, got[k], "key %q", k.k)
				}
			}
			check()
			// bbolt keeps working on it: random updates, deletes, new buckets.
			for range 3 {
				require.NoError(t, db.Update(func(tx *bolt.Tx) error {
					for i := range 2000 {
						p, k := rng.Int32N(tc.parts+1), key()
						b, err := tx.CreateBucketIfNotExists(partBucket(p))
						if err != nil {
							return err
						}
						if rng.IntN(3) == 0 {
							delete(model, pk{p, string(k)})
							if err := b.Delete(k); err != nil {
								return err
							}
							continue
						}
						v := []byte(fmt.Sprintf("upd-%d", i))
						model[pk{p, string(k)}] = v
						if err := b.Put(k, v); err != nil {
							return err
						}
					}
					return nil
				}))
				check()
			}
		})
	}
}
