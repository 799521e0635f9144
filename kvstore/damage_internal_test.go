package kvstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
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

// boltContents returns every key of every bucket as "bucket/key".
func boltContents(t testing.TB, db *bolt.DB) map[string][]byte {
	got := map[string][]byte{}
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if v != nil {
					got[string(name)+"/"+string(k)] = bytes.Clone(v)
				}
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

// The page writer's output is what bbolt itself would accept at every page
// size a machine may have: tx.Check finds nothing, the file has a freelist
// (so bbolt never walks it at open), the store's own check accepts it, and
// it stays so after bbolt writes to it (the meta bucket, then updates).
func TestBulkLoadPassesTxCheckAtEveryPageSize(t *testing.T) {
	for _, ps := range []int{1 << 10, 2 << 10, 4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10} {
		t.Run(fmt.Sprintf("%dKiB", ps>>10), func(t *testing.T) {
			dir := t.TempDir()
			var logs bytes.Buffer
			srt := newSorter(1<<20, dir, "t") // small: spilled runs too
			srt.pageSize = ps
			srt.log = slog.New(slog.NewTextHandler(&logs, nil))
			model := fillSorter(t, srt, 30_000, 3, 997, uint64(ps))
			path := filepath.Join(dir, "c.db")
			require.NoError(t, srt.writeBolt(path, partBucket))
			require.Empty(t, logs.String(), "the page writer's file must not need the fallback")

			c := &fileChecker{}
			f, err := os.Open(path)
			require.NoError(t, err)
			fi, _ := f.Stat()
			c.f, c.size = f, fi.Size()
			require.NoError(t, c.check())
			f.Close()
			require.NotEqual(t, noFreelist, c.m.freelist, "the file must carry a freelist page")
			require.Greater(t, c.m.hwm, uint64(20), "enough pages for branch levels")

			db, err := openBolt(path, time.Second, false)
			require.NoError(t, err)
			require.Equal(t, ps, db.Info().PageSize)
			requireTxCheck(t, db)
			require.Equal(t, model, boltContents(t, db))

			// What bulkLoad does next, then the follower's updates.
			require.NoError(t, db.Update(func(tx *bolt.Tx) error {
				return writeMeta(tx, "t", [16]byte{1}, 3, map[int32]int64{0: 1, 1: 2, 2: 3}, time.Now())
			}))
			rng := rand.New(rand.NewPCG(9, uint64(ps)))
			for range 3 {
				require.NoError(t, db.Update(func(tx *bolt.Tx) error {
					for i := range 3000 {
						p := rng.Int32N(3)
						k := fmt.Appendf(nil, "key-%08d", rng.IntN(40_000))
						mk := string(partBucket(p)) + "/" + string(k)
						b := tx.Bucket(partBucket(p))
						if rng.IntN(3) == 0 {
							delete(model, mk)
							if err := b.Delete(k); err != nil {
								return err
							}
							continue
						}
						v := fmt.Appendf(nil, "upd-%d", i)
						model[mk] = v
						if err := b.Put(k, v); err != nil {
							return err
						}
					}
					return nil
				}))
				requireTxCheck(t, db)
			}
			got := boltContents(t, db)
			for k := range got {
				if strings.HasPrefix(k, "meta/") || strings.HasPrefix(k, "offsets/") {
					delete(got, k)
				}
			}
			require.Equal(t, model, got)
			require.NoError(t, db.Close())
			require.NoError(t, checkFileWith(path, true), "a file bbolt updated must pass the open check")
			require.NoError(t, checkFileWith(path, false), "a file bbolt updated must pass the open check (read)")
		})
	}
}

// The open check must never refuse a file bbolt wrote itself, or the store
// would rebuild its cache at every start: random puts, deletes, large
// values, nested and inline buckets, deleted buckets (after which tx.Check
// itself reports leaked pages), with and without a synced freelist.
func TestCheckFileAcceptsWhatBboltWrites(t *testing.T) {
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
					require.NoError(t, checkFileWith(path, true), "round %d (mapped)", round)
					require.NoError(t, checkFileWith(path, false), "round %d (read)", round)
				}
			})
		}
	}
}

// pageAt returns the offset of page id of the file at path, after reading
// its page size from meta page 0.
func pageSizeOf(t testing.TB, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var b [pageHeaderSize + 12]byte
	_, err = f.ReadAt(b[:], 0)
	require.NoError(t, err)
	return int64(binary.NativeEndian.Uint32(b[pageHeaderSize+8:]))
}

func writeAt(t testing.TB, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func u16(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }
func u64(v uint64) []byte { return binary.NativeEndian.AppendUint64(nil, v) }

// pagesByType lists the pages of a file checkFile accepts by what they are:
// "meta" (the one bbolt uses), "freelist", "branch", "leaf" (data leaves:
// not the root bucket's), reachable ones only.
func pagesByType(t testing.TB, path string) map[string][]uint64 {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	fi, _ := f.Stat()
	c := &fileChecker{f: f, size: fi.Size()}
	require.NoError(t, c.check())
	out := map[string][]uint64{"meta": {c.m.txid % 2}, "freelist": {c.m.freelist}, "hwm": {c.m.hwm}}
	for id := uint64(2); id < c.m.hwm; id++ {
		if !c.seen.has(id) || id == c.m.freelist || id == c.m.root {
			continue
		}
		var h [pageHeaderSize]byte
		_, err := f.ReadAt(h[:], int64(id*c.ps))
		require.NoError(t, err)
		if binary.NativeEndian.Uint64(h[0:]) != id {
			continue // an overflow page
		}
		switch binary.NativeEndian.Uint16(h[8:]) {
		case branchPageFlag:
			out["branch"] = append(out["branch"], id)
		case leafPageFlag:
			out["leaf"] = append(out["leaf"], id)
		}
	}
	return out
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

// Every kind of damage is found by the open check, and opening a damaged
// file returns an error wrapping errDamaged: bbolt never gets to panic.
func TestOpeningADamagedFileReturnsErrDamaged(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	cases := map[string]func(t *testing.T, path string, ps int64, pages map[string][]uint64){
		"two data pages flagged as freelist pages": func(t *testing.T, path string, ps int64, pages map[string][]uint64) {
			l := pages["leaf"]
			writeAt(t, path, int64(l[len(l)/3])*ps+8, u16(freelistPageFlag))
			writeAt(t, path, int64(l[2*len(l)/3])*ps+8, u16(freelistPageFlag))
		},
		"branch page flagged as leaf": func(t *testing.T, path string, ps int64, pages map[string][]uint64) {
			writeAt(t, path, int64(pages["branch"][0])*ps+8, u16(leafPageFlag))
		},
		"leaf page flagged as branch": func(t *testing.T, path string, ps int64, pages map[string][]uint64) {
			writeAt(t, path, int64(pages["leaf"][1])*ps+8, u16(branchPageFlag))
		},
		"meta page flags": func(t *testing.T, path string, ps int64, pages map[string][]uint64) {
			writeAt(t, path, int64(pages["meta"][0])*ps+8, u16(freelistPageFlag))
		},
		"freelist page flagged as leaf": func(t *testing.T, path string, ps int64, pages map[string][]uint64) {
			writeAt(t, path, int64(pages["freelist"][0])*ps+8, u16(leafPageFlag))
		},
		"freelist lists a page in use": func(t *testing.T, path string, ps int64, pages map[string][]uint64) {
			fl := int64(pages["freelist"][0]) * ps
			writeAt(t, path, fl+10, u16(1))
			writeAt(t, path, fl+pageHeaderSize, u64(pages["leaf"][0]))
		},
		"truncated inside the last page": func(t *testing.T, path string, ps int64, pages map[string][]uint64) {
			require.NoError(t, os.Truncate(path, int64(pages["hwm"][0])*ps-ps/2))
		},
		"random bytes over a leaf page": func(t *testing.T, path string, ps int64, pages map[string][]uint64) {
			junk := make([]byte, ps)
			for i := range junk {
				junk[i] = byte(rng.Uint32())
			}
			writeAt(t, path, int64(pages["leaf"][2])*ps, junk)
		},
		"random bytes over the elements of a leaf page": func(t *testing.T, path string, ps int64, pages map[string][]uint64) {
			junk := make([]byte, 64)
			for i := range junk {
				junk[i] = byte(rng.Uint32())
			}
			writeAt(t, path, int64(pages["leaf"][3])*ps+pageHeaderSize, junk)
		},
		"a branch page pointing to itself": func(t *testing.T, path string, ps int64, pages map[string][]uint64) {
			b := pages["branch"][0]
			writeAt(t, path, int64(b)*ps+pageHeaderSize+8, u64(b))
		},
		"two keys of a leaf swapped": func(t *testing.T, path string, ps int64, pages map[string][]uint64) {
			// Element 0 takes element 1's position: keys out of order.
			at := int64(pages["leaf"][4])*ps + pageHeaderSize
			f, err := os.Open(path)
			require.NoError(t, err)
			el := make([]byte, 2*pageElemSize)
			_, err = f.ReadAt(el, at)
			f.Close()
			require.NoError(t, err)
			pos1 := binary.NativeEndian.Uint32(el[pageElemSize+4:]) + pageElemSize
			writeAt(t, path, at+4, binary.NativeEndian.AppendUint32(nil, pos1))
		},
	}
	for name, hurt := range cases {
		t.Run(name, func(t *testing.T) {
			path := bulkLoaded(t, 20_000)
			ps := pageSizeOf(t, path)
			pages := pagesByType(t, path)
			require.NotEmpty(t, pages["branch"])
			require.Greater(t, len(pages["leaf"]), 10)
			hurt(t, path, ps, pages)

			err := checkFileWith(path, true)
			require.ErrorIs(t, err, errDamaged)
			t.Log(err)
			require.Equal(t, err, checkFileWith(path, false), "reading the file finds the same damage as mapping it")
			db, _, err := openAndReadMeta(path, time.Second)
			require.Nil(t, db)
			require.Error(t, err)
			require.NotErrorIs(t, err, os.ErrNotExist)
		})
	}
}

// Damage that appears while the file is open (it was checked at open) makes
// a read or a write through safeView or safeUpdate return errDamaged
// instead of crashing the process.
func TestSafeViewAndSafeUpdateTurnDamageIntoAnError(t *testing.T) {
	path := bulkLoaded(t, 20_000)
	ps := pageSizeOf(t, path)
	pages := pagesByType(t, path)
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
	writeAt(t, path, int64(pages["leaf"][5])*ps+8, u16(freelistPageFlag))

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

// When bbolt refuses the file the page writer made, the bulk load warns
// and loads the same data through bbolt's API instead.
func TestABulkLoadBboltRefusesFallsBackToBboltsAPI(t *testing.T) {
	defer func(v func(string) error) { verifyWritten = v }(verifyWritten)
	var refused []string
	verifyWritten = func(path string) error {
		refused = append(refused, path)
		return errors.New("refused for the test")
	}
	for _, tc := range []struct {
		name        string
		ps          int
		n, bigEvery int
	}{
		{"1KiB", 1 << 10, 30_000, 997},
		{"4KiB", 4 << 10, 30_000, 997},
		{"64KiB", 64 << 10, 30_000, 997},
		{"more than one transaction", 4 << 10, 800, 1}, // ~80 MB of values
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := tc.ps
			dir := t.TempDir()
			var logs bytes.Buffer
			srt := newSorter(1<<20, dir, "t")
			srt.pageSize, srt.log = ps, slog.New(slog.NewTextHandler(&logs, nil))
			model := fillSorter(t, srt, tc.n, 3, tc.bigEvery, 2)
			require.NotEmpty(t, srt.runs, "the fallback must read spilled runs a second time")
			path := filepath.Join(dir, "c.db")
			require.NoError(t, srt.writeBolt(path, partBucket))
			require.Contains(t, refused, path)
			require.Contains(t, logs.String(), "level=WARN")
			require.Contains(t, logs.String(), "bbolt refused the file")
			require.Contains(t, logs.String(), "refused for the test")

			c := &fileChecker{}
			f, err := os.Open(path)
			require.NoError(t, err)
			fi, _ := f.Stat()
			c.f, c.size = f, fi.Size()
			require.NoError(t, c.check())
			f.Close()
			require.Greater(t, c.m.txid, uint64(1), "bbolt's commits wrote the file, not the page writer")
			if tc.bigEvery == 1 {
				require.Greater(t, c.m.txid, uint64(2), "the load spans several transactions (the first commits txid 2)")
			}
			db, err := openBolt(path, time.Second, false)
			require.NoError(t, err)
			defer db.Close()
			require.Equal(t, ps, db.Info().PageSize)
			requireTxCheck(t, db)
			require.Equal(t, model, boltContents(t, db))
			left, _ := filepath.Glob(filepath.Join(dir, "t"+runSuffix))
			require.Empty(t, left, "spilled runs are removed after the fallback too")
		})
	}
}

// A binary built with another bbolt than the page writer was verified
// against does not use the page writer at all.
func TestABulkLoadWithAnotherBboltVersionUsesBboltsAPI(t *testing.T) {
	defer func(v func() string) { builtBbolt = v }(builtBbolt)
	builtBbolt = func() string { return "v1.9.0" }
	defer func(v func(string) error) { verifyWritten = v }(verifyWritten)
	verifyWritten = func(string) error { t.Error("the page writer ran"); return nil }

	dir := t.TempDir()
	var logs bytes.Buffer
	srt := newSorter(64<<20, dir, "t")
	srt.log = slog.New(slog.NewTextHandler(&logs, nil))
	model := fillSorter(t, srt, 5000, 2, 0, 4)
	path := filepath.Join(dir, "c.db")
	require.NoError(t, srt.writeBolt(path, partBucket))
	require.Contains(t, logs.String(), "level=WARN")
	require.Contains(t, logs.String(), "bbolt=v1.9.0 verified="+pageWriterBbolt)
	db, err := openBolt(path, time.Second, false)
	require.NoError(t, err)
	defer db.Close()
	requireTxCheck(t, db)
	require.Equal(t, model, boltContents(t, db))
}

// The page writer lays out bbolt's on-disk format by hand. It was verified
// against one version of bbolt; a move to another must be a decision.
func TestBulkLoadPagesPinTheBboltVersion(t *testing.T) {
	f, err := os.Open("../go.mod")
	require.NoError(t, err)
	defer f.Close()
	var got, replaced string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "//")
		line = strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(line), "require "), "replace ")
		lhs, rhs, isReplace := strings.Cut(line, "=>")
		fields := strings.Fields(lhs)
		if len(fields) == 0 || fields[0] != "go.etcd.io/bbolt" {
			continue
		}
		switch {
		case isReplace:
			replaced = "replaced by " + strings.TrimSpace(rhs)
		case len(fields) >= 2:
			got = fields[1]
		}
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, got, "no go.etcd.io/bbolt in ../go.mod")
	if replaced != "" {
		got = replaced
	}
	if got != pageWriterBbolt {
		t.Fatalf("go.mod has go.etcd.io/bbolt %s, but the bulk loader's page writer (kvstore/bulk.go, writePages) "+
			"was verified against %s. It writes bbolt's file format by hand: before moving, read the new version's "+
			"internal/common (page.go, meta.go, inbucket.go: page header, element, meta and freelist layouts, Version), "+
			"db.go (Open, loadFreelist, mmap) and tx_check.go; run TestBulkLoadPassesTxCheckAtEveryPageSize and "+
			"TestCheckFileAcceptsWhatBboltWrites; then set pageWriterBbolt to %s. Until then a binary built with "+
			"another version loads through bbolt's API (slower) and says so in a warning.",
			got, pageWriterBbolt, got)
	}
}
