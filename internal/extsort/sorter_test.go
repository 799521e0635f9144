package extsort

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// rec is one record as Each hands it out.
type rec struct {
	part int32
	key  string
	val  string
}

// model is the sort the Sorter must agree with: every record in memory, a
// stable sort by (partition, key), the last of equal keys kept, tombstones
// dropped.
type model struct{ adds []rec } // val "\x00tomb": a tombstone

const tomb = "\x00tomb"

func (m *model) add(part int32, key, val []byte) {
	v := string(val)
	if val == nil {
		v = tomb
	}
	m.adds = append(m.adds, rec{part, string(key), v})
}

func (m *model) want() []rec {
	s := slices.Clone(m.adds)
	slices.SortStableFunc(s, func(a, b rec) int {
		return cmp.Or(cmp.Compare(a.part, b.part), cmp.Compare(a.key, b.key))
	})
	var out []rec
	for i, r := range s {
		if i+1 < len(s) && s[i+1].part == r.part && s[i+1].key == r.key {
			continue
		}
		if r.val != tomb {
			out = append(out, r)
		}
	}
	return out
}

func collect(t *testing.T, s *Sorter) []rec {
	t.Helper()
	var out []rec
	require.NoError(t, s.Each(func(part int32, key, val []byte) error {
		out = append(out, rec{part, string(key), string(val)})
		return nil
	}))
	return out
}

// randomKey draws from few distinct bytes and lengths 0 to 19, so that keys
// tie on their 8-byte prefix often, are prefixes of each other, and repeat.
func randomKey(rng *rand.Rand) []byte {
	k := make([]byte, rng.IntN(20))
	for i := range k {
		k[i] = "ab\x00\xff"[rng.IntN(4)]
	}
	return k
}

// The Sorter hands out what an in-memory stable sort and dedup would, with
// any memory limit: none (no spill), nothing (a run per Add), tiny (over a
// hundred runs to merge), small, and a few chunks (values of kilobytes:
// several spills each refilling the chunks and sort buffers the one before
// emptied), and a mebibyte with thousands of records a run whose size
// changes every few thousand (the entries' room grows by estimate, or the
// Sorter spills early); with negative partitions, empty keys, empty and large values,
// tombstones, and Each called midway with Adds after it.
func TestSorterAgreesWithAnInMemorySortAtAnyMemoryLimit(t *testing.T) {
	for _, limit := range []int{0, 2 << 10, 16 << 10, 1 << 20, 3 * chunkSize, 1 << 30} {
		for seed := range uint64(4) {
			t.Run(fmt.Sprintf("limit=%d/seed=%d", limit, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, uint64(limit)))
				dir := t.TempDir()
				s := New(limit, dir, "run-*.tmp")
				defer s.Close()
				var m model
				n := 3000
				switch limit {
				case 0:
					n = 100 // a run per Add
				case 1 << 20:
					n = 60000 // thousands of entries a run, in phases of short and long values
				}
				for i := range n {
					part, key := rng.Int32N(5)-2, randomKey(rng)
					var val []byte
					switch r := rng.IntN(100); {
					case r < 15: // a tombstone
					case r < 20:
						val = []byte{}
					case r < 21 && limit != 1<<20:
						val = bytes.Repeat([]byte{byte(i)}, maxInlineRec+1+rng.IntN(1000))
					case limit == 3*chunkSize:
						val = bytes.Repeat(fmt.Appendf(nil, "v%d", i), 500+rng.IntN(500))
					case limit == 1<<20 && i/7000%2 == 1:
						val = bytes.Repeat([]byte{'v'}, 20+rng.IntN(200))
					default:
						val = fmt.Appendf(nil, "v%d", i)
					}
					require.NoError(t, s.Add(part, key, val))
					m.add(part, key, val)
					if i == n/2 {
						require.Equal(t, m.want(), collect(t, s), "Each midway")
					}
				}
				switch {
				case limit == 3*chunkSize:
					require.Greater(t, s.Runs(), 3, "values of kilobytes must fill the chunks several times")
				case limit <= 1<<20:
					require.Greater(t, s.Runs(), 1, "a small limit must spill")
				default:
					require.Zero(t, s.Runs())
				}
				want := m.want()
				require.Equal(t, want, collect(t, s))
				require.Equal(t, want, collect(t, s), "Each again")
			})
		}
	}
}

func runFiles(t *testing.T, dir string) []string {
	t.Helper()
	got, err := filepath.Glob(filepath.Join(dir, "run-*.tmp"))
	require.NoError(t, err)
	return got
}

// Spilled runs are files named by the pattern in dir, for as long as the
// Sorter lives; Close removes them (also after Each failed midway), is
// idempotent, and ends the Sorter.
func TestSorterCloseRemovesItsRuns(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "other.tmp"), nil, 0o600))
	s := New(1<<10, dir, "run-*.tmp")
	for i := range 500 {
		require.NoError(t, s.Add(0, fmt.Appendf(nil, "k%d", i), []byte("v")))
	}
	require.Len(t, runFiles(t, dir), s.Runs())
	require.Greater(t, s.Runs(), 2)
	stop := errors.New("stop")
	require.ErrorIs(t, s.Each(func(int32, []byte, []byte) error { return stop }), stop)
	require.NoError(t, s.Close())
	require.Empty(t, runFiles(t, dir))
	require.FileExists(t, filepath.Join(dir, "other.tmp"), "only its own runs")
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Add(0, []byte("k"), nil), ErrClosed)
	require.ErrorIs(t, s.Each(func(int32, []byte, []byte) error { return nil }), ErrClosed)
	require.Zero(t, s.Runs())
}

// An error of the callback stops Each and comes back unwrapped, from memory
// and from a merge of runs alike; the Sorter stays usable.
func TestSorterEachStopsAtTheCallbacksError(t *testing.T) {
	for _, limit := range []int{1 << 30, 1 << 10} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			s := New(limit, t.TempDir(), "run-*.tmp")
			defer s.Close()
			for i := range 200 {
				require.NoError(t, s.Add(0, fmt.Appendf(nil, "k%03d", i), []byte("v")))
			}
			stop := errors.New("stop")
			calls := 0
			err := s.Each(func(int32, []byte, []byte) error {
				if calls++; calls == 10 {
					return stop
				}
				return nil
			})
			require.Equal(t, stop, err)
			require.Equal(t, 10, calls)
			require.Len(t, collect(t, s), 200)
		})
	}
}

// A run that cannot be written (no such directory) fails the Add that
// spills it, and every later Add and Each with it.
func TestSorterSpillFailureIsSticky(t *testing.T) {
	s := New(0, filepath.Join(t.TempDir(), "missing"), "run-*.tmp")
	err := s.Add(0, []byte("k"), []byte("v"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorContains(t, err, "extsort: spill run")
	require.Equal(t, err, s.Add(0, []byte("k2"), []byte("v")))
	require.Equal(t, err, s.Each(func(int32, []byte, []byte) error { return nil }))
	require.NoError(t, s.Close())
}

// unwritableRuns makes every run file one that no write can go to (opened
// read-only), until t ends.
func unwritableRuns(t *testing.T) {
	old := createRun
	createRun = func(dir, pattern string) (*os.File, error) {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return nil, err
		}
		f.Close()
		return os.Open(f.Name())
	}
	t.Cleanup(func() { createRun = old })
}

// A run whose writing fails on the spill's own goroutine fails the next
// Add that spills, and every later Add and Each with it; Close still
// removes every run.
func TestSorterFailureToWriteARunIsSticky(t *testing.T) {
	dir := t.TempDir()
	unwritableRuns(t)
	s := New(0, dir, "run-*.tmp") // a run per Add
	require.NoError(t, s.Add(0, []byte("k1"), []byte("v")), "the first run is written after Add returns")
	err := s.Add(0, []byte("k2"), []byte("v"))
	require.ErrorContains(t, err, "extsort: spill run")
	require.ErrorContains(t, err, "write", "the write failed, not the file's creation")
	require.Equal(t, err, s.Add(0, []byte("k3"), []byte("v")))
	require.Equal(t, err, s.Each(func(int32, []byte, []byte) error { return nil }))
	require.NoError(t, s.Close())
	require.Empty(t, runFiles(t, dir))
}

// Once a spill has failed on its own goroutine, the next Add reports it,
// spilling or not: a restore stops reading as soon as its disk fails.
func TestSorterTheAddAfterAFailedSpillEndedReportsIt(t *testing.T) {
	dir := t.TempDir()
	unwritableRuns(t)
	s := New(64<<10, dir, "run-*.tmp")
	defer s.Close()
	for i := 0; s.Runs() == 0; i++ {
		require.NoError(t, s.Add(0, fmt.Appendf(nil, "k%06d", i), make([]byte, 100)))
	}
	<-s.bg.done
	err := s.Add(0, []byte("after"), []byte("v"))
	require.ErrorContains(t, err, "extsort: spill run")
	require.Equal(t, err, s.Each(func(int32, []byte, []byte) error { return nil }))
}

// A run that went missing or was cut short makes Each fail with an error
// that says so, never a silent partial result.
func TestSorterEachReportsADamagedRun(t *testing.T) {
	for name, hurt := range map[string]func(t *testing.T, path string){
		"removed": func(t *testing.T, path string) { require.NoError(t, os.Remove(path)) },
		"cut inside a record": func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(path, fi.Size()-3))
		},
		"cut inside a header": func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, append(b, 0, 0, 0, 1, 0x80), 0o600))
		},
		"a length no spill writes": func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			b = append(b, 0, 0, 0, 1, 1) // key length 1, then a value length of 2^63
			b = append(b, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 'k')
			require.NoError(t, os.WriteFile(path, b, 0o600))
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := New(2<<10, dir, "run-*.tmp")
			defer s.Close()
			for i := range 300 {
				require.NoError(t, s.Add(1, fmt.Appendf(nil, "k%03d", i), []byte("value")))
			}
			runs := s.runs // oldest first (runFiles sorts by name): the last may still be being written
			require.Greater(t, len(runs), 2)
			hurt(t, runs[len(runs)/2])
			err := s.Each(func(int32, []byte, []byte) error { return nil })
			require.Error(t, err)
			require.ErrorContains(t, err, "extsort: read run")
			switch name {
			case "removed":
				require.ErrorIs(t, err, fs.ErrNotExist)
			case "a length no spill writes":
				require.ErrorIs(t, err, errBadHeader)
			default:
				require.ErrorIs(t, err, io.ErrUnexpectedEOF)
			}
		})
	}
}

// held is what s holds in memory for records, by the capacity of what is
// allocated: its chunks, emptied ones kept for reuse, both sort buffers,
// the spare sort buffers, and the spill in progress's chunks and buffers
// (waiting for that spill to end, without taking its memory back).
func (s *Sorter) held() int {
	n := (cap(s.ents) + cap(s.scratch) + cap(s.spare.ents) + cap(s.spare.scratch)) * entSize
	for _, c := range s.chunks {
		n += cap(c)
	}
	for _, c := range s.free {
		n += cap(c)
	}
	if j := s.bg; j != nil {
		<-j.done
		n += (cap(j.m.ents) + cap(j.m.scratch)) * entSize
		for _, c := range j.m.chunks {
			n += cap(c)
		}
	}
	return n
}

// What the Sorter holds for records stays within its limit (plus the
// chunk being filled, and a record) however many spills reuse its buffers,
// with records of every size from a few bytes to a few kilobytes.
func TestSorterHoldsNoMoreThanItsLimit(t *testing.T) {
	for _, limit := range []int{1 << 20, 2 << 20, 8 << 20} {
		for _, sizes := range []string{"mixed", "restore-like"} {
			t.Run(fmt.Sprintf("limit=%d/%s", limit, sizes), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(1, uint64(limit)))
				s := New(limit, t.TempDir(), "run-*.tmp")
				defer s.Close()
				most := 0
				for i := range 200000 {
					size := 1 << rng.IntN(12)
					if i > 100000 {
						size = rng.IntN(16) // small records after large ones
					}
					if sizes == "restore-like" {
						size = 40 + rng.IntN(8) // the bench's values: ~42 bytes after 16-byte keys
					}
					require.NoError(t, s.Add(0, fmt.Appendf(nil, "k%d", rng.IntN(1<<20)), make([]byte, size)))
					most = max(most, s.held())
				}
				require.Greater(t, s.Runs(), 3)
				t.Logf("most held %d (%.2fx), limit %d", most, float64(most)/float64(limit), limit)
				require.LessOrEqual(t, most, limit+4096, "most held")
			})
		}
	}
}

// Once its entries' room runs out with less than a sixteenth more to be
// had under the limit, the Sorter spills rather than copying every entry
// into a larger buffer; what Each hands out is unchanged. (The room is
// clipped by hand after each Add: the estimate rarely falls short by so
// little.)
func TestSorterSpillsRatherThanGrowingItsEntriesByLittle(t *testing.T) {
	s := New(1<<20, t.TempDir(), "run-*.tmp")
	defer s.Close()
	var m model
	i := 0
	add := func() {
		key, val := fmt.Appendf(nil, "k%07d", i*7919%100000), bytes.Repeat([]byte{byte(i)}, 20)
		require.NoError(t, s.Add(0, key, val))
		m.add(0, key, val)
		i++
	}
	clip := func() { // room for no more entries than there are
		s.used -= (cap(s.ents) - len(s.ents)) * entSize
		s.ents = slices.Clip(s.ents)
	}
	for s.used < s.half()*7/8 {
		add()
	}
	require.Zero(t, s.Runs())
	for clip(); s.Runs() == 0; clip() {
		add()
	}
	require.Equal(t, 1, len(s.ents), "spilled before the last Add placed its record")
	require.Less(t, s.used, s.half()/4)
	for s.Runs() < 3 {
		add()
	}
	require.Equal(t, m.want(), collect(t, s))
}

// The last version of a key wins across runs and memory alike: a value
// in an older run hidden by a tombstone in a newer one, brought back by a
// value in memory, and hidden again by a tombstone in memory; keys equal
// in their 8-byte prefix but not beyond keep apart.
func TestSorterLastVersionWinsAcrossRunsAndMemory(t *testing.T) {
	s := New(0, t.TempDir(), "run-*.tmp") // a run per Add
	defer s.Close()
	for _, r := range []struct{ key, val string }{
		{"prefix-a1", "old"}, {"prefix-a2", "kept"}, {"prefix-a1", tomb}, {"prefix-a", "short"},
		{"gone", "v"}, {"gone", tomb},
	} {
		var val []byte
		if r.val != tomb {
			val = []byte(r.val)
		}
		require.NoError(t, s.Add(1, []byte(r.key), val))
	}
	require.Equal(t, 6, s.Runs())
	require.Equal(t, []rec{{1, "prefix-a", "short"}, {1, "prefix-a2", "kept"}}, collect(t, s))

	s.limit = 1 << 20 // from here on in memory
	require.NoError(t, s.Add(1, []byte("prefix-a1"), []byte("back")))
	require.NoError(t, s.Add(1, []byte("prefix-a2"), nil))
	require.Equal(t, 6, s.Runs())
	require.Equal(t, []rec{{1, "prefix-a", "short"}, {1, "prefix-a1", "back"}}, collect(t, s))
	require.NoError(t, s.Add(1, []byte("prefix-a1"), nil))
	require.Equal(t, []rec{{1, "prefix-a", "short"}}, collect(t, s))
}

// However many runs a small limit spills, Each reads at most maxFanIn at
// once: it first merges the oldest ones into one, keeping each key's last
// version (a tombstone in an old run still hides an older value, and a
// newer run still overrides a merged one). Close removes the merged run too.
func TestSorterMergesTheOldestRunsFirstWhenThereAreTooManyToReadAtOnce(t *testing.T) {
	dir := t.TempDir()
	s := New(0, dir, "run-*.tmp") // a run per Add
	var m model
	rng := rand.New(rand.NewPCG(7, 7))
	add := func(part int32, key, val []byte) {
		require.NoError(t, s.Add(part, key, val))
		m.add(part, key, val)
	}
	for i := range 3*maxFanIn + 5 {
		key := fmt.Appendf(nil, "k%02d", rng.IntN(40))
		switch {
		case i%7 == 3:
			add(int32(i%3), key, nil)
		default:
			add(int32(i%3), key, fmt.Appendf(nil, "v%d", i))
		}
	}
	require.Greater(t, s.Runs(), maxFanIn)
	open := func() int { // file descriptors open in this process, where that can be told
		fds, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			return -1
		}
		return len(fds)
	}
	before, most := open(), 0
	var got []rec
	require.NoError(t, s.Each(func(part int32, key, val []byte) error {
		most = max(most, open())
		got = append(got, rec{part, string(key), string(val)})
		return nil
	}))
	require.Equal(t, m.want(), got)
	require.LessOrEqual(t, s.Runs(), maxFanIn)
	require.Len(t, runFiles(t, dir), s.Runs(), "the merged runs' files are gone")
	if before >= 0 {
		require.LessOrEqual(t, most-before, maxFanIn+1, "files open during the merge")
	}
	add(1, []byte("k01"), []byte("after the merge"))
	require.Equal(t, m.want(), collect(t, s))
	require.NoError(t, s.Close())
	require.Empty(t, runFiles(t, dir))
}
