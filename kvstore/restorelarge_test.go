package kvstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/kvstore"
)

// produceAll produces recs in order, many in flight at once, and fails t
// if any is not acknowledged.
func produceAll(ctx context.Context, t *testing.T, cl *kgo.Client, recs []*kgo.Record) {
	t.Helper()
	var failed atomic.Pointer[error]
	for _, r := range recs {
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Store(&err)
			}
		})
	}
	require.NoError(t, cl.Flush(ctx))
	if p := failed.Load(); p != nil {
		require.NoError(t, *p)
	}
}

// maxBatch records the largest record batch a client fetched.
type maxBatch struct{ most atomic.Int64 }

func (h *maxBatch) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	for {
		old := h.most.Load()
		if int64(m.UncompressedBytes) <= old || h.most.CompareAndSwap(old, int64(m.UncompressedBytes)) {
			return
		}
	}
}

// A record batch larger than the reader's fetch (1 MiB a partition) still
// comes whole, and a full restore holds every key of it: a topic whose
// producer writes uncompressed batches of several MiB (max.message.bytes
// allowing them) restores exactly, at the smallest RestoreMemory.
func TestAFullRestoreReadsBatchesLargerThanItsFetches(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	resp, err := e.admin().CreateTopic(ctx, 3, -1, map[string]*string{
		"cleanup.policy": ptr("compact"), "max.message.bytes": ptr("16777216"),
	}, e.topic)
	require.NoError(t, err)
	require.NoError(t, resp.Err)

	codec := e.userCodec()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...), kgo.DefaultProduceTopic(e.topic),
		kgo.ProducerBatchMaxBytes(8<<20), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(time.Second), kgo.MaxBufferedRecords(1000))
	require.NoError(t, err)
	defer cl.Close()
	want := map[string]User{}
	var pending []*kgo.Record
	for i := range 600 {
		k := fmt.Sprintf("user-%03d", i)
		u := User{FirstName: strings.Repeat(string(rune('a'+i%26)), 20<<10), LastName: k, Age: int32(i % 100)}
		b, err := codec.Encode(u)
		require.NoError(t, err)
		pending = append(pending, &kgo.Record{Key: []byte(k), Value: b})
		want[k] = u
	}
	produceAll(ctx, t, cl, pending)

	h := &maxBatch{}
	s := e.open("", kvstore.RestoreMemory(1<<20), kvstore.KafkaOpts(kgo.WithHooks(h)))
	require.Equal(t, "full", s.Stats().Restore.Mode)
	require.Greater(t, h.most.Load(), int64(1<<20), "a batch larger than a fetch was read")
	t.Logf("largest batch fetched: %d bytes", h.most.Load())
	require.Equal(t, want, contents(t, s))
}

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
	var pending []*kgo.Record
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
		pending = append(pending, &kgo.Record{Key: []byte(k), Value: val})
	}
	produceAll(ctx, t, cl, pending)

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
