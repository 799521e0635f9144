package boltcheck

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/internal/boltfmt"
)

// Check must never refuse a file bbolt wrote itself, or its caller would
// rebuild a sound file at every start: random puts, deletes, large values,
// nested and inline buckets, deleted buckets (after which tx.Check itself
// reports leaked pages), with and without a synced freelist, mapped or read.
func TestCheckAcceptsWhatBboltWrites(t *testing.T) {
	for _, noFreelistSync := range []bool{false, true} {
		for _, ps := range []int{1 << 10, 4 << 10, 16 << 10} {
			t.Run(fmt.Sprintf("NoFreelistSync=%v/%dKiB", noFreelistSync, ps>>10), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "b.db")
				rng := rand.New(rand.NewPCG(5, uint64(ps)))
				for round := range 6 {
					db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: noFreelistSync, PageSize: ps})
					require.NoError(t, err)
					require.NoError(t, db.Update(func(tx *bolt.Tx) error {
						for i := range 2000 {
							top, err := tx.CreateBucketIfNotExists(fmt.Appendf(nil, "b%d", rng.IntN(4)))
							if err != nil {
								return err
							}
							b := top
							if rng.IntN(3) == 0 { // a nested bucket, often small enough to be inline
								if b, err = top.CreateBucketIfNotExists(fmt.Appendf(nil, "n%d", rng.IntN(30))); err != nil {
									return err
								}
							}
							k := fmt.Appendf(nil, "k%06d", rng.IntN(5000))
							if rng.IntN(4) == 0 {
								if err := b.Delete(k); err != nil {
									return err
								}
								continue
							}
							v := fmt.Appendf(nil, "v%d", i)
							if rng.IntN(200) == 0 {
								v = bytes.Repeat(v, 3000)
							}
							if err := b.Put(k, v); err != nil {
								return err
							}
						}
						if rng.IntN(3) == 0 {
							_ = tx.DeleteBucket(fmt.Appendf(nil, "b%d", rng.IntN(4)))
						}
						return nil
					}))
					require.NoError(t, db.Close())
					require.NoError(t, check(path, true), "round %d (mapped)", round)
					require.NoError(t, check(path, false), "round %d (read)", round)
				}
			})
		}
	}
}

// poke writes b at off in f.
func poke(t *testing.T, f *os.File, off int64, b []byte) {
	_, err := f.WriteAt(b, off)
	require.NoError(t, err)
}

func u16(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }
func u64(v uint64) []byte { return binary.NativeEndian.AppendUint64(nil, v) }

// pagesByType lists the pages of a file Check accepts by what they are:
// "meta" (the one bbolt uses), "freelist", "branch", "leaf" (data leaves:
// not the root bucket's), reachable ones only, and "hwm" and "ps".
func pagesByType(t testing.TB, path string) map[string][]uint64 {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	fi, _ := f.Stat()
	c := &checker{f: f, size: fi.Size()}
	require.NoError(t, c.check())
	out := map[string][]uint64{"meta": {c.m.txid % 2}, "freelist": {c.m.freelist}, "hwm": {c.m.hwm}, "ps": {c.ps}}
	for id := uint64(2); id < c.m.hwm; id++ {
		if !c.seen.has(id) || id == c.m.freelist || id == c.m.root {
			continue
		}
		var h [boltfmt.PageHeaderSize]byte
		_, err := f.ReadAt(h[:], int64(id*c.ps))
		require.NoError(t, err)
		if binary.NativeEndian.Uint64(h[0:]) != id {
			continue // an overflow page
		}
		switch binary.NativeEndian.Uint16(h[8:]) {
		case boltfmt.BranchPage:
			out["branch"] = append(out["branch"], id)
		case boltfmt.LeafPage:
			out["leaf"] = append(out["leaf"], id)
		}
	}
	return out
}

// loaded writes n keys over two buckets as a bulk load does (sorted, pages
// packed full, one transaction), then a small bucket in a second
// transaction, and returns the file's path.
func loaded(t testing.TB, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"part-00000", "part-00001"} {
			b, err := tx.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			b.FillPercent = 1.0
			for i := range n / 2 {
				if err := b.Put(fmt.Appendf(nil, "key-%08d", i), fmt.Appendf(nil, "value-%d", i)); err != nil {
					return err
				}
			}
		}
		return nil
	}))
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("meta"))
		if err == nil {
			err = b.Put([]byte("format"), []byte{1})
		}
		return err
	}))
	require.NoError(t, db.Close())
	return path
}

// Every kind of damage bbolt would trip over is found, mapped or read, with
// the same error, and the error wraps ErrDamaged.
func TestCheckFindsEveryKindOfDamage(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	type pages = map[string][]uint64
	cases := map[string]func(t *testing.T, f *os.File, ps int64, pg pages){
		"two data pages flagged as freelist pages": func(t *testing.T, f *os.File, ps int64, pg pages) {
			l := pg["leaf"]
			poke(t, f, int64(l[len(l)/3])*ps+8, u16(boltfmt.FreelistPage))
			poke(t, f, int64(l[2*len(l)/3])*ps+8, u16(boltfmt.FreelistPage))
		},
		"branch page flagged as leaf": func(t *testing.T, f *os.File, ps int64, pg pages) {
			poke(t, f, int64(pg["branch"][0])*ps+8, u16(boltfmt.LeafPage))
		},
		"leaf page flagged as branch": func(t *testing.T, f *os.File, ps int64, pg pages) {
			poke(t, f, int64(pg["leaf"][1])*ps+8, u16(boltfmt.BranchPage))
		},
		"meta page flags": func(t *testing.T, f *os.File, ps int64, pg pages) {
			poke(t, f, int64(pg["meta"][0])*ps+8, u16(boltfmt.FreelistPage))
		},
		"freelist page flagged as leaf": func(t *testing.T, f *os.File, ps int64, pg pages) {
			poke(t, f, int64(pg["freelist"][0])*ps+8, u16(boltfmt.LeafPage))
		},
		"freelist lists a page in use": func(t *testing.T, f *os.File, ps int64, pg pages) {
			fl := int64(pg["freelist"][0]) * ps
			poke(t, f, fl+10, u16(1))
			poke(t, f, fl+boltfmt.PageHeaderSize, u64(pg["leaf"][0]))
		},
		"truncated to nothing": func(t *testing.T, f *os.File, ps int64, pg pages) {
			require.NoError(t, f.Truncate(0))
		},
		"truncated inside the last page": func(t *testing.T, f *os.File, ps int64, pg pages) {
			require.NoError(t, f.Truncate(int64(pg["hwm"][0])*ps-ps/2))
		},
		"random bytes over a leaf page": func(t *testing.T, f *os.File, ps int64, pg pages) {
			junk := make([]byte, ps)
			for i := range junk {
				junk[i] = byte(rng.Uint32())
			}
			poke(t, f, int64(pg["leaf"][2])*ps, junk)
		},
		"random bytes over the elements of a leaf page": func(t *testing.T, f *os.File, ps int64, pg pages) {
			junk := make([]byte, 64)
			for i := range junk {
				junk[i] = byte(rng.Uint32())
			}
			poke(t, f, int64(pg["leaf"][3])*ps+boltfmt.PageHeaderSize, junk)
		},
		"a branch page pointing to itself": func(t *testing.T, f *os.File, ps int64, pg pages) {
			b := pg["branch"][0]
			poke(t, f, int64(b)*ps+boltfmt.PageHeaderSize+8, u64(b))
		},
		"a leaf's last key past its parent's next key": func(t *testing.T, f *os.File, ps int64, pg pages) {
			// The keys stay in order within the page; only the bound from
			// the parent catches it.
			page := int64(pg["leaf"][4]) * ps
			hdr := make([]byte, boltfmt.PageHeaderSize)
			_, err := f.ReadAt(hdr, page)
			require.NoError(t, err)
			n := int64(binary.NativeEndian.Uint16(hdr[10:]))
			at := page + boltfmt.PageHeaderSize + boltfmt.ElemSize*(n-1)
			el := make([]byte, boltfmt.ElemSize)
			_, err = f.ReadAt(el, at)
			require.NoError(t, err)
			pos, ksize := binary.NativeEndian.Uint32(el[4:]), binary.NativeEndian.Uint32(el[8:])
			poke(t, f, at+int64(pos), bytes.Repeat([]byte{0xff}, int(ksize)))
		},
		"two keys of a leaf swapped": func(t *testing.T, f *os.File, ps int64, pg pages) {
			// Element 0 takes element 1's position: keys out of order.
			at := int64(pg["leaf"][4])*ps + boltfmt.PageHeaderSize
			el := make([]byte, 2*boltfmt.ElemSize)
			_, err := f.ReadAt(el, at)
			require.NoError(t, err)
			pos1 := binary.NativeEndian.Uint32(el[boltfmt.ElemSize+4:]) + boltfmt.ElemSize
			poke(t, f, at+4, binary.NativeEndian.AppendUint32(nil, pos1))
		},
	}
	for name, hurt := range cases {
		t.Run(name, func(t *testing.T) {
			path := loaded(t, 20_000)
			pg := pagesByType(t, path)
			require.NotEmpty(t, pg["branch"])
			require.Greater(t, len(pg["leaf"]), 10)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			require.NoError(t, err)
			hurt(t, f, int64(pg["ps"][0]), pg)
			require.NoError(t, f.Close())

			err = Check(path)
			require.ErrorIs(t, err, ErrDamaged)
			require.ErrorContains(t, err, "boltcheck: ")
			t.Log(err)
			require.Equal(t, err, check(path, false), "reading the file finds the same damage as mapping it")
		})
	}
}

// Errors that are not about the file's contents do not wrap ErrDamaged.
func TestCheckOfAMissingFileIsNotDamage(t *testing.T) {
	err := Check(filepath.Join(t.TempDir(), "missing.db"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NotErrorIs(t, err, ErrDamaged)
}
