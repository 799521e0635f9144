package kvstore_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/testdata"
)

// damageResult is what the child process reports about the store it opened
// on a damaged cache.
type damageResult struct {
	Mode     string
	Guard    string
	Reason   string
	Guards   map[string]int64
	Contents map[string]User
	GetErrs  []string // keys of the model Get did not return as written
}

// TestHelperDamagedCacheProcess is not a test: it is the child process the
// damage tests start, so that a crash fails the parent test rather than
// killing the test binary. It opens a store on a damaged cache, reads every
// key of the model back with Get and everything with Scan, and prints what
// it found.
func TestHelperDamagedCacheProcess(t *testing.T) {
	dir := os.Getenv("COMPACTKV_DAMAGE_DIR")
	if dir == "" {
		t.Skip("helper process, started by the damaged cache tests")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := kvstore.Open[User](ctx, os.Getenv("COMPACTKV_DAMAGE_TOPIC"),
		kvstore.Brokers(strings.Split(os.Getenv("COMPACTKV_DAMAGE_BROKERS"), ",")...),
		kvstore.Registry(os.Getenv("COMPACTKV_DAMAGE_REGISTRY")),
		kvstore.ValueSchema(testdata.UserV2Schema), kvstore.Dir(dir))
	require.NoError(t, err)
	defer s.Close()
	b, err := os.ReadFile(os.Getenv("COMPACTKV_DAMAGE_MODEL"))
	require.NoError(t, err)
	var model map[string]User
	require.NoError(t, json.Unmarshal(b, &model))

	st := s.Stats().Restore
	res := damageResult{Mode: st.Mode, Guard: st.Guard.String(), Reason: st.Reason, Guards: map[string]int64{}, Contents: map[string]User{}}
	for g, n := range s.Stats().Guards {
		res.Guards[g.String()] = n
	}
	for k, want := range model {
		got, ok, err := s.Get(ctx, k)
		if err != nil || !ok || got.LastName != want.LastName || got.Age != want.Age {
			res.GetErrs = append(res.GetErrs, fmt.Sprintf("%s: ok=%v err=%v", k, ok, err))
		}
	}
	for en, err := range s.Scan(ctx, "") {
		require.NoError(t, err)
		res.Contents[en.Key] = en.Value
	}
	out, err := json.Marshal(res)
	require.NoError(t, err)
	fmt.Printf("result: %s\n", out)
}

// openDamaged runs the child process on dir and returns what it found. A
// child that crashes (a panic bbolt raised where no recover reaches, a
// fault) fails the test with its output.
func (e *env) openDamaged(t *testing.T, dir string, model map[string]User) damageResult {
	t.Helper()
	mb, err := json.Marshal(model)
	require.NoError(t, err)
	modelPath := filepath.Join(t.TempDir(), "model.json")
	require.NoError(t, os.WriteFile(modelPath, mb, 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperDamagedCacheProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		"COMPACTKV_DAMAGE_DIR="+dir, "COMPACTKV_DAMAGE_TOPIC="+e.topic,
		"COMPACTKV_DAMAGE_BROKERS="+strings.Join(e.seeds, ","),
		"COMPACTKV_DAMAGE_REGISTRY="+e.regURL, "COMPACTKV_DAMAGE_MODEL="+modelPath)
	out, err := cmd.CombinedOutput()
	if err != nil {
		what := "failed"
		if strings.Contains(string(out), "panic:") || strings.Contains(string(out), "fatal error:") ||
			strings.Contains(string(out), "SIGSEGV") || strings.Contains(string(out), "SIGBUS") {
			what = "CRASHED"
		}
		t.Fatalf("the store %s on the damaged cache file (%v); child output:\n%s", what, err, tail(string(out), 60))
	}
	for line := range strings.Lines(string(out)) {
		if j, ok := strings.CutPrefix(line, "result: "); ok {
			var res damageResult
			require.NoError(t, json.Unmarshal([]byte(j), &res))
			return res
		}
	}
	t.Fatalf("the child reported nothing; output:\n%s", tail(string(out), 60))
	return damageResult{}
}

func tail(s string, lines int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > lines {
		ls = append([]string{"..."}, ls[len(ls)-lines:]...)
	}
	return strings.Join(ls, "\n")
}

// requireRebuilt asserts that a store opened on a damaged cache moved the
// file aside, rebuilt it from the topic (full, GuardCorrupt) and serves every
// key of model.
func requireRebuilt(t *testing.T, dir string, cache string, res damageResult, model map[string]User) {
	t.Helper()
	require.Equal(t, "full", res.Mode, "reason: %s", res.Reason)
	require.Equal(t, kvstore.GuardCorrupt.String(), res.Guard, "reason: %s", res.Reason)
	require.Contains(t, res.Reason, "unreadable")
	require.Equal(t, map[string]int64{kvstore.GuardCorrupt.String(): 1}, res.Guards)
	require.Empty(t, res.GetErrs, "keys Get did not return as written")
	require.Equal(t, model, res.Contents)
	aside, _ := filepath.Glob(filepath.Join(dir, cache) + ".corrupt-*")
	require.Len(t, aside, 1, "the damaged file is kept aside")
}

// writeUsers writes n users through a store on dir (its cache is then one
// bbolt's transactions wrote, as the follower applied the writes) and
// returns the model.
func (e *env) writeUsers(dir string, n int) map[string]User {
	e.t.Helper()
	s, err := kvstore.Open[User](ctxT(e.t), e.topic, e.opts(dir)...)
	require.NoError(e.t, err)
	rng := rand.New(rand.NewPCG(uint64(n), 17))
	model := map[string]User{}
	errs := make(chan error, n)
	for i := range n {
		k := fmt.Sprintf("user-%06d", rng.IntN(4*n))
		u := User{FirstName: fmt.Sprintf("first-%d", i), LastName: fmt.Sprintf("last-%010d", rng.Int64N(1e10)), Age: int32(i % 100)}
		model[k] = u
		s.PutAsync(ctxT(e.t), k, u, func(_ kvstore.Position, err error) { errs <- err })
	}
	for range n {
		require.NoError(e.t, <-errs)
	}
	require.NoError(e.t, s.Close())
	return model
}

// cachePages lists the pages of a closed cache file in use, by kind:
// "meta" (the one bbolt reads), "freelist", "branch", "leaf" (data leaves,
// not the root bucket's), and "hwm" (the high water mark), with the page
// size. It reads the file read-only through bbolt's API.
func cachePages(t *testing.T, path string) (map[string][]int, int64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	require.NoError(t, err)
	defer db.Close()
	ps := db.Info().PageSize
	pages := map[string][]int{}
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		hwm := int(tx.Size()) / ps
		root := int(tx.Cursor().Bucket().Root())
		pages["meta"] = []int{int(tx.ID() % 2)}
		pages["hwm"] = []int{hwm}
		for id := 2; id < hwm; {
			info, err := tx.Page(id)
			if err != nil {
				return err
			}
			step := 1
			switch info.Type {
			case "free":
			case "leaf":
				if id != root {
					pages["leaf"] = append(pages["leaf"], id)
				}
				step += info.OverflowCount
			default:
				pages[info.Type] = append(pages[info.Type], id)
				step += info.OverflowCount
			}
			id += step
		}
		return nil
	}))
	return pages, int64(ps)
}

func pokeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func flags(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	require.NoError(t, err)
	defer src.Close()
	dst, err := os.Create(to)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
}

// The report: marking two data pages of the cache file as freelist
// pages (page flags 0x10) crashed the service at every start, in bbolt's own
// goroutine where no recover reaches. Now the store moves the file aside
// and rebuilds it, whether a bulk load or bbolt's transactions wrote it.
func TestTwoDataPagesFlaggedAsFreelistPagesRebuildInsteadOfCrashing(t *testing.T) {
	e := newEnv(t)
	written := t.TempDir()
	model := e.writeUsers(written, 4000)
	loaded := t.TempDir()
	s := e.open(loaded)
	require.Equal(t, "full", s.Stats().Restore.Mode)
	require.NoError(t, s.Close())

	for name, from := range map[string]string{"bulk-loaded": loaded, "written by the follower": written} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := e.cachePath(dir)
			copyFile(t, e.cachePath(from), path)
			pages, ps := cachePages(t, path)
			leaves := pages["leaf"]
			require.Greater(t, len(leaves), 4, "the test needs data pages to damage")
			for _, id := range []int{leaves[len(leaves)/3], leaves[2*len(leaves)/3]} {
				pokeAt(t, path, int64(id)*ps+8, flags(0x10))
			}
			requireRebuilt(t, dir, e.topic+".db", e.openDamaged(t, dir, model), model)
		})
	}
}

// Any damage to the cache file ends in a full rebuild from the topic, never
// in a crash, at the next start.
func TestADamagedCacheFileEndsInAFullRebuild(t *testing.T) {
	e := newEnv(t)
	model := e.writeUsers(t.TempDir(), 4000)
	loaded := t.TempDir()
	s := e.open(loaded)
	require.Equal(t, "full", s.Stats().Restore.Mode)
	require.NoError(t, s.Close())

	rng := rand.New(rand.NewPCG(3, 3))
	junk := func(n int64) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	damage := map[string]func(t *testing.T, path string, pages map[string][]int, ps int64){
		"branch page flagged as a leaf": func(t *testing.T, path string, pages map[string][]int, ps int64) {
			pokeAt(t, path, int64(pages["branch"][0])*ps+8, flags(0x02))
		},
		"branch page flagged as a freelist": func(t *testing.T, path string, pages map[string][]int, ps int64) {
			pokeAt(t, path, int64(pages["branch"][0])*ps+8, flags(0x10))
		},
		"leaf page flagged as a branch": func(t *testing.T, path string, pages map[string][]int, ps int64) {
			pokeAt(t, path, int64(pages["leaf"][1])*ps+8, flags(0x01))
		},
		"meta page flagged as a freelist": func(t *testing.T, path string, pages map[string][]int, ps int64) {
			pokeAt(t, path, int64(pages["meta"][0])*ps+8, flags(0x10))
		},
		"freelist page flagged as a leaf": func(t *testing.T, path string, pages map[string][]int, ps int64) {
			require.Len(t, pages["freelist"], 1, "the cache file must carry a freelist page")
			pokeAt(t, path, int64(pages["freelist"][0])*ps+8, flags(0x02))
		},
		"truncated inside its last page": func(t *testing.T, path string, pages map[string][]int, ps int64) {
			require.NoError(t, os.Truncate(path, int64(pages["hwm"][0])*ps-ps/2))
		},
		"random bytes over a leaf page": func(t *testing.T, path string, pages map[string][]int, ps int64) {
			pokeAt(t, path, int64(pages["leaf"][2])*ps, junk(ps))
		},
		"random bytes over a branch page's elements": func(t *testing.T, path string, pages map[string][]int, ps int64) {
			pokeAt(t, path, int64(pages["branch"][0])*ps+16, junk(64))
		},
		"a branch page pointing to itself": func(t *testing.T, path string, pages map[string][]int, ps int64) {
			b := pages["branch"][0]
			pokeAt(t, path, int64(b)*ps+16+8, binary.NativeEndian.AppendUint64(nil, uint64(b)))
		},
	}
	for name, hurt := range damage {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := e.cachePath(dir)
			copyFile(t, e.cachePath(loaded), path)
			pages, ps := cachePages(t, path)
			require.NotEmpty(t, pages["branch"], "the test needs a branch page")
			require.Greater(t, len(pages["leaf"]), 4, "the test needs data pages")
			hurt(t, path, pages, ps)
			requireRebuilt(t, dir, e.topic+".db", e.openDamaged(t, dir, model), model)
		})
	}

	// The undamaged file restores only the delta: the check at open does not
	// mistake a good file for a damaged one.
	s = e.open(loaded)
	require.Equal(t, "delta", s.Stats().Restore.Mode, s.Stats().Restore.Reason)
	require.Equal(t, model, contents(t, s))
}

// A cache file an earlier version wrote has no freelist page (it opened
// bbolt with NoFreelistSync). It is still good: Open checks it, bbolt finds
// its free pages once and writes a freelist, and the restore is a delta.
func TestACacheWithoutAFreelistPageRestoresOnlyTheDelta(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	model := e.seeded(dir, 300)
	db, err := bolt.Open(e.cachePath(dir), 0o600, &bolt.Options{NoFreelistSync: true})
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error { return nil }))
	require.NoError(t, db.Close())
	pages, _ := cachePages(t, e.cachePath(dir))
	require.Empty(t, pages["freelist"], "the file must look like an earlier version's")

	s := e.open(dir)
	require.Equal(t, "delta", s.Stats().Restore.Mode, s.Stats().Restore.Reason)
	require.Empty(t, s.Stats().Guards)
	require.Equal(t, model, contents(t, s))
	require.NoError(t, s.Close())
	pages, _ = cachePages(t, e.cachePath(dir))
	require.Len(t, pages["freelist"], 1, "the first open writes a freelist")
}
