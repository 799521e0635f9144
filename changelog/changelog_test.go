package changelog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/changelog"
	"github.com/compactkv/compactkv/embedded"
)

func setup(t *testing.T) (*embedded.Cluster, context.Context) {
	t.Helper()
	c, err := embedded.Start()
	require.NoError(t, err)
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c, ctx
}

func open(t *testing.T, ctx context.Context, c *embedded.Cluster, name string, spec changelog.TopicSpec) *changelog.Topic {
	t.Helper()
	tp, err := changelog.Open(ctx, name, changelog.Config{Brokers: c.Brokers(), Spec: spec})
	require.NoError(t, err)
	t.Cleanup(func() { tp.Close(context.Background()) })
	return tp
}

var oneP = changelog.TopicSpec{Partitions: 1, ReplicationFactor: -1}

func TestOpenCreatesACompactedTopicAndRefusesOneThatIsNot(t *testing.T) {
	c, ctx := setup(t)
	tp := open(t, ctx, c, "t", changelog.TopicSpec{Partitions: 3, ReplicationFactor: -1,
		Configs: map[string]string{"delete.retention.ms": "1234", "cleanup.policy": "delete"}})
	info := tp.Info()
	require.Equal(t, "t", tp.Name())
	require.Equal(t, int32(3), info.Partitions)
	require.Equal(t, "compact", info.CleanupPolicy, "cleanup.policy is always compact")
	require.Equal(t, 1234*time.Millisecond, info.DeleteRetention)
	require.NotEqual(t, [16]byte{}, info.ID)

	again := open(t, ctx, c, "t", oneP)
	require.Equal(t, info, again.Info(), "an existing topic keeps what it has")

	require.NoError(t, c.Kafka().CreateTopic("plain", 1, map[string]string{"cleanup.policy": "delete"}))
	_, err := changelog.Open(ctx, "plain", changelog.Config{Brokers: c.Brokers(), Spec: oneP})
	require.ErrorIs(t, err, changelog.ErrNotCompacted)
	require.ErrorContains(t, err, `topic "plain" has cleanup.policy="delete"`)

	_, err = changelog.Open(ctx, "t", changelog.Config{})
	require.ErrorContains(t, err, "no brokers")
}

// A reader hands out committed records only, and its Next moves past
// transaction markers, so a resume never waits for a record that is not
// there.
func TestTheReaderSkipsAbortedRecordsAndResumesPastMarkers(t *testing.T) {
	c, ctx := setup(t)
	tp := open(t, ctx, c, "t", oneP)
	tx, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()...), kgo.DefaultProduceTopic("t"), kgo.TransactionalID("tx"))
	require.NoError(t, err)
	defer tx.Close()
	for i, commit := range []bool{true, false, true} {
		require.NoError(t, tx.BeginTransaction())
		for j := range 3 {
			require.NoError(t, tx.ProduceSync(ctx, &kgo.Record{Key: fmt.Appendf(nil, "k%d-%d", i, j), Value: []byte("v")}).FirstErr())
		}
		require.NoError(t, tx.EndTransaction(ctx, kgo.TransactionEndTry(commit)))
	}
	_, end, err := tp.Offsets(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(12), end[0], "3 transactions of 3 records and a marker each")
	onlyEnd, err := tp.EndOffsets(ctx)
	require.NoError(t, err)
	require.Equal(t, end, onlyEnd)

	r, err := tp.NewReader(map[int32]int64{0: 0})
	require.NoError(t, err)
	defer r.Close()
	var keys []string
	var next int64
	for next < end[0] {
		bs, err := r.Poll(ctx)
		require.NoError(t, err)
		for _, b := range bs {
			for _, rec := range b.Records {
				keys = append(keys, string(rec.Key))
			}
			next = b.Next
		}
	}
	require.Equal(t, []string{"k0-0", "k0-1", "k0-2", "k2-0", "k2-1", "k2-2"}, keys)
	require.Equal(t, end[0], next)
}

func TestTheReaderStopsAtAGapInsteadOfSkippingIt(t *testing.T) {
	c, ctx := setup(t)
	tp := open(t, ctx, c, "t", oneP)
	for i := range 5 {
		off, err := tp.Produce(ctx, 0, fmt.Appendf(nil, "k%d", i), []byte("v"))
		require.NoError(t, err)
		require.Equal(t, int64(i), off)
	}
	require.NoError(t, c.Kafka().DeleteRecords("t", 0, 3))

	r, err := tp.NewReader(map[int32]int64{0: 1}) // records 1 and 2 are gone
	require.NoError(t, err)
	defer r.Close()
	_, err = r.Poll(ctx)
	require.ErrorIs(t, err, changelog.ErrGap)
	var pe *changelog.PartitionError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "t", pe.Topic)
	require.Equal(t, int32(0), pe.Partition)
}

// The client's errors reach callers as the package's own: a write after
// Close is ErrClosed, a write the broker cannot take in time is
// ErrDeliveryTimeout, and a Reader polled after Close says ErrClosed.
func TestClientErrorsAreTranslated(t *testing.T) {
	c, ctx := setup(t)
	tp, err := changelog.Open(ctx, "t", changelog.Config{Brokers: c.Brokers(), Spec: oneP, DeliveryTimeout: time.Second})
	require.NoError(t, err)
	r, err := tp.NewReader(map[int32]int64{0: 0})
	require.NoError(t, err)
	r.Close()
	_, err = r.Poll(ctx)
	require.ErrorIs(t, err, changelog.ErrClosed)

	c.Close() // the broker goes away
	_, err = tp.Produce(context.Background(), 0, []byte("k"), []byte("v"))
	require.ErrorIs(t, err, changelog.ErrDeliveryTimeout)
	var pe *changelog.PartitionError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, int32(0), pe.Partition)

	require.NoError(t, tp.Close(ctx))
	_, err = tp.Produce(ctx, 0, []byte("k"), []byte("v"))
	require.ErrorIs(t, err, changelog.ErrClosed)
	_, err = tp.NewReader(map[int32]int64{0: 0})
	require.ErrorIs(t, err, changelog.ErrClosed)
}

// A topic deleted under a running Topic is reported as missing.
func TestATopicDeletedInUseIsReportedMissing(t *testing.T) {
	c, ctx := setup(t)
	tp := open(t, ctx, c, "t", oneP)
	require.NoError(t, c.Kafka().DeleteTopic("t"))
	_, err := tp.EndOffsets(ctx)
	require.ErrorIs(t, err, changelog.ErrTopicMissing)
}

// A partition removed from a Reader yields nothing more, and added back it
// resumes where it is told to; the other partition is read on throughout,
// without a record lost or repeated.
func TestAPartitionRemovedAndAddedBackLeavesTheOthersUndisturbed(t *testing.T) {
	c, ctx := setup(t)
	tp := open(t, ctx, c, "t", changelog.TopicSpec{Partitions: 2, ReplicationFactor: -1})
	produce := func(p int32, keys ...string) {
		for _, k := range keys {
			_, err := tp.Produce(ctx, p, []byte(k), []byte("v"))
			require.NoError(t, err)
		}
	}
	r, err := tp.NewReader(map[int32]int64{0: 0, 1: 0})
	require.NoError(t, err)
	defer r.Close()
	got := map[int32][]string{}
	// pollUntil polls until partition p's records reach n in all.
	pollUntil := func(p int32, n int) {
		t.Helper()
		for len(got[p]) < n {
			bs, err := r.Poll(ctx)
			require.NoError(t, err)
			for _, b := range bs {
				for _, rec := range b.Records {
					got[b.Partition] = append(got[b.Partition], string(rec.Key))
				}
			}
		}
	}

	produce(0, "a0", "a1")
	produce(1, "b0", "b1")
	pollUntil(0, 2)
	pollUntil(1, 2)

	r.Remove(1)
	produce(1, "b2", "b3") // not read while removed
	produce(0, "a2")
	pollUntil(0, 3)
	require.Equal(t, []string{"b0", "b1"}, got[1])

	r.Add(map[int32]int64{1: 3}) // resume past b2
	produce(0, "a3")
	pollUntil(1, 3)
	pollUntil(0, 4)
	require.Equal(t, []string{"a0", "a1", "a2", "a3"}, got[0])
	require.Equal(t, []string{"b0", "b1", "b3"}, got[1])
}
