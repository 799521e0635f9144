package kvstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/kvstore"
)

// A topic far larger than RestoreMemory restores exactly at its 1 MiB
// minimum: 300,000 records (overwrites and tombstones among them) spill
// more runs than the merge reads at once (64), so the oldest are merged
// into one first; every key ends as the model says, tombstoned ones
// included, and no run file is left behind.
func TestARestoreFarLargerThanItsMemoryMergesItsRunsAndEqualsTheModel(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // producing takes a while under -race
	defer cancel()
	e.open("") // creates the topic and registers the schema
	codec := e.userCodec()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...), kgo.DefaultProduceTopic(e.topic), kgo.MaxBufferedRecords(100_000))
	require.NoError(t, err)
	defer cl.Close()
	model := map[string]User{}
	rng := rand.New(rand.NewPCG(19, 19))
	var failed atomic.Pointer[error]
	const n = 300_000 // at ~100 bytes a record held, about 75 runs of half of 1 MiB
	for i := range n {
		k := fmt.Sprintf("user-%06d", rng.IntN(200_000))
		var val []byte
		if rng.IntN(10) == 0 {
			delete(model, k)
		} else {
			u := User{FirstName: k, LastName: fmt.Sprintf("version-%07d", i), Age: int32(i % 100)}
			val, err = codec.Encode(u)
			require.NoError(t, err)
			model[k] = u
		}
		cl.Produce(ctx, &kgo.Record{Key: []byte(k), Value: val}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Store(&err)
			}
		})
	}
	require.NoError(t, cl.Flush(ctx))
	if p := failed.Load(); p != nil {
		require.NoError(t, *p)
	}

	dir := t.TempDir()
	r := e.open(dir, kvstore.RestoreMemory(1<<20))
	st := r.Stats().Restore
	require.Equal(t, "full", st.Mode)
	require.EqualValues(t, n, st.Records)
	require.Equal(t, model, contents(t, r))
	runs, err := filepath.Glob(filepath.Join(dir, "*.restore-run-*"))
	require.NoError(t, err)
	require.Empty(t, runs, "run files left in the cache directory")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	t.Logf("cache directory after the restore: %d entries", len(entries))
}
