package kvstore_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/kvstore"
)

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
	var failed atomic.Pointer[error]
	for i := range 600 {
		k := fmt.Sprintf("user-%03d", i)
		u := User{FirstName: strings.Repeat(string(rune('a'+i%26)), 20<<10), LastName: k, Age: int32(i % 100)}
		b, err := codec.Encode(u)
		require.NoError(t, err)
		cl.Produce(ctx, &kgo.Record{Key: []byte(k), Value: b}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Store(&err)
			}
		})
		want[k] = u
	}
	require.NoError(t, cl.Flush(ctx))
	if p := failed.Load(); p != nil {
		require.NoError(t, *p)
	}

	h := &maxBatch{}
	s := e.open("", kvstore.RestoreMemory(1<<20), kvstore.KafkaOpts(kgo.WithHooks(h)))
	require.Equal(t, "full", s.Stats().Restore.Mode)
	require.Greater(t, h.most.Load(), int64(1<<20), "a batch larger than a fetch was read")
	t.Logf("largest batch fetched: %d bytes", h.most.Load())
	require.Equal(t, want, contents(t, s))
}
