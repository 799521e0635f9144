package kvstore_test

// Tests that need Apache Kafka's own log cleaner. They run only with
// COMPACTKV_BROKERS set (scripts/kafka.sh up starts a broker whose cleaner
// wakes every 200 ms) and skip otherwise.
//
// How the real cleaner is driven (Kafka 4.1.1, measured):
//   - the cleaner never touches the active segment, and a segment rolls
//     (segment.ms) only when the next record is appended after segment.ms;
//     so "let the cleaner run" means: wait longer than segment.ms, append one
//     more record (any key), then poll until the effect shows;
//   - a tombstone survives its first cleaning (which only drops the older
//     values of its key and stamps a delete horizon of delete.retention.ms);
//     it goes on a later cleaning, which needs the same wait-and-append again.
// The waits before the extra append (realSegmentWait) are the only fixed
// sleeps; every outcome is awaited by polling with a bound.

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/kvstore"
)

const (
	// realSegmentMS and realDeleteRetentionMS are the per-topic cleaner
	// settings of these tests.
	realSegmentMS         = 100
	realDeleteRetentionMS = 100
	// realSegmentWait is how long to wait before the record that rolls the
	// active segment: longer than segment.ms and delete.retention.ms.
	realSegmentWait = 150 * time.Millisecond
	// realCleanerBound bounds every wait for the cleaner.
	realCleanerBound = 60 * time.Second
)

// fastCleaner returns the topic configs that let the real cleaner compact
// within a second.
func fastCleaner() []kvstore.Option {
	return []kvstore.Option{
		kvstore.TopicConfig("segment.ms", "100"),
		kvstore.TopicConfig("min.cleanable.dirty.ratio", "0.01"),
		kvstore.TopicConfig("delete.retention.ms", "100"),
	}
}

// topicRecords reads the whole topic (start to end offsets, read_committed)
// with a raw client and returns its records in partition and offset order.
func (e *env) topicRecords() []*kgo.Record {
	e.t.Helper()
	ctx := ctxT(e.t)
	end := e.endOffsets()
	var want int
	for _, o := range end {
		if o > 0 {
			want++
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...), kgo.ConsumeTopics(e.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	require.NoError(e.t, err)
	defer cl.Close()
	var out []*kgo.Record
	done := map[int32]bool{}
	for len(done) < want {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		require.NoError(e.t, ctx.Err(), "reading the topic")
		fs.EachError(func(_ string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				require.NoError(e.t, err, "partition %d", p)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, r)
			if r.Offset+1 >= end[r.Partition] {
				done[r.Partition] = true
			}
		})
	}
	return out
}

// rollAndAwait appends a record under key roll after realSegmentWait (so the
// segment before it can be cleaned) until cond holds, at most
// realCleanerBound. Each round's record is added to model when it is non-nil.
func (e *env) rollAndAwait(w *kvstore.Store[User], model map[string]User, what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(realCleanerBound)
	for round := 0; !cond(); round++ {
		require.True(e.t, time.Now().Before(deadline), "the log cleaner did not %s within %v", what, realCleanerBound)
		// Unavoidable fixed wait: the active segment rolls only on an append
		// made after segment.ms (and a tombstone goes only on a cleaning after
		// its delete.retention.ms horizon).
		time.Sleep(realSegmentWait)
		u := User{FirstName: "roll", Age: int32(round)}
		acked(e.t)(w.Put(ctxT(e.t), "~roll", u))
		if model != nil {
			model["~roll"] = u
		}
	}
}

// alterTopicConfig sets one config of the test's topic.
func (e *env) alterTopicConfig(key, value string) {
	e.t.Helper()
	rs, err := e.admin().AlterTopicConfigs(ctxT(e.t), []kadm.AlterConfig{{Name: key, Value: kadm.StringPtr(value)}}, e.topic)
	if err == nil {
		var r kadm.AlterConfigsResponse
		if r, err = rs.On(e.topic, nil); err == nil {
			err = r.Err
		}
	}
	require.NoError(e.t, err)
}

func TestRealCleanerCompactionKeepsTheState(t *testing.T) {
	e := newEnv(t)
	e.requireRealKafka("the real log cleaner")
	// Segments do not roll while the records are written (segment.ms is the
	// default, 7 days), so nothing is cleaned before "before" restores.
	w := e.open("", kvstore.TopicConfig("min.cleanable.dirty.ratio", "0.01"))
	model := map[string]User{}
	randomOps(t, w, model, 1000, rand.New(rand.NewPCG(11, 11)))

	before := e.open("")
	require.Equal(t, model, contents(t, before))
	require.EqualValues(t, 1000, before.Stats().Restore.Records)

	e.alterTopicConfig("segment.ms", "100")
	e.rollAndAwait(w, model, "compact the topic", func() bool {
		return len(e.topicRecords()) < 500
	})

	after := e.open("")
	require.Equal(t, model, contents(t, after))
	require.Less(t, after.Stats().Restore.Records, before.Stats().Restore.Records)
	t.Logf("restore read %d records before the cleaner ran, %d after", before.Stats().Restore.Records, after.Stats().Restore.Records)
}

func TestRealCleanerRemovesTombstonesAndTheStaleCacheIsRebuilt(t *testing.T) {
	e := newEnv(t)
	e.requireRealKafka("the real log cleaner removing tombstones")
	ctx := ctxT(t)
	dir := t.TempDir()

	// A store puts k and goes offline with k in its cache.
	a, err := kvstore.Open[User](ctx, e.topic, e.opts(dir, fastCleaner()...)...)
	require.NoError(t, err)
	acked(t)(a.Put(ctx, "k", User{FirstName: "Ada", Age: 36}))
	acked(t)(a.Put(ctx, "keep", User{FirstName: "Grace", Age: 85}))
	require.NoError(t, a.Close())
	offline := time.Now()

	// Another store deletes k; the cleaner then removes k's value and, on a
	// later cleaning, its tombstone.
	b := e.open("")
	acked(t)(b.Delete(ctx, "k"))
	e.rollAndAwait(b, nil, "remove k's value and tombstone", func() bool {
		for _, r := range e.topicRecords() {
			if string(r.Key) == "k" {
				return false
			}
		}
		return true
	})

	// The cache has been offline longer than delete.retention.ms: a delta
	// restore would never see the tombstone and k would come back.
	require.Eventually(t, func() bool {
		return time.Since(offline) > realDeleteRetentionMS*time.Millisecond
	}, 10*time.Second, 10*time.Millisecond)
	a = e.open(dir)
	st := a.Stats().Restore
	require.Equal(t, "full", st.Mode, "reason %q", st.Reason)
	require.Contains(t, st.Reason, "delete.retention")
	_, ok, err := a.Get(ctx, "k")
	require.NoError(t, err)
	require.False(t, ok, "a deleted key must not come back")
	got, ok, err := a.Get(ctx, "keep")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "Grace", got.FirstName)
}

func TestRealTopicDeletedAndRecreatedIsDetectedByItsTopicID(t *testing.T) {
	e := newEnv(t)
	e.requireRealKafka("deleting and recreating a topic on a real broker")
	ctx := ctxT(t)
	dir := t.TempDir()

	s, err := kvstore.Open[User](ctx, e.topic, e.opts(dir)...)
	require.NoError(t, err)
	acked(t)(s.Put(ctx, "old", User{FirstName: "gone"}))
	require.NoError(t, s.Close())

	adm := e.admin()
	_, err = adm.DeleteTopic(ctx, e.topic)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		tds, err := adm.ListTopics(ctx, e.topic)
		if err != nil {
			return false
		}
		td, ok := tds[e.topic]
		return !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition)
	}, 30*time.Second, 20*time.Millisecond, "topic deletion")

	// Open creates the topic again, with a new topic ID. Right after a
	// deletion the broker may still refuse the name for a moment.
	var again *kvstore.Store[User]
	require.Eventually(t, func() bool {
		again, err = kvstore.Open[User](ctx, e.topic, e.opts(dir)...)
		return err == nil
	}, 30*time.Second, 100*time.Millisecond, "recreate the topic: last error %v", err)
	t.Cleanup(func() { again.Close() })
	st := again.Stats().Restore
	require.Equal(t, "full", st.Mode)
	require.Contains(t, st.Reason, "topic ID")
	_, ok, err := again.Get(ctx, "old")
	require.NoError(t, err)
	require.False(t, ok)
}
