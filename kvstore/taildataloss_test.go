package kvstore_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/compactkv/compactkv/kvstore"
)

// A running store whose next records are deleted before it reads them must
// not carry on past the gap: it rebuilds its cache from the topic.
func TestARunningStoreThatFindsAGapRebuildsItsCache(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("holding fetches and DeleteRecords")
	ctx := ctxT(t)
	s := e.open("")
	acked(t)(s.Put(ctx, "old", User{FirstName: "old"}))

	// Hold every fetch until release is closed, counting the held ones.
	var held atomic.Int32
	release := make(chan struct{})
	kc := e.cluster.Kafka()
	kc.ControlKey(kmsg.Fetch.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		select {
		case <-release:
		default:
			held.Add(1)
			kc.SleepControl(func() { <-release })
		}
		return nil, nil, false // then served as usual
	})
	require.Eventually(t, func() bool { return held.Load() >= 1 }, 10*time.Second, time.Millisecond)

	// Meanwhile another writer adds records, and they are deleted before
	// the store's follower could read them.
	w := e.open("")
	for _, k := range []string{"gone-1", "gone-2", "gone-3"} {
		acked(t)(w.Put(ctx, k, User{FirstName: k}))
	}
	acked(t)(w.Put(ctx, "survivor", User{FirstName: "survivor"}))
	end := e.endOffsets()[0]
	require.NoError(t, kc.DeleteRecords(e.topic, 0, end-1))
	close(release)

	require.Eventually(t, func() bool {
		return s.Stats().Restore.Guard == kvstore.GuardBelowLogStart // set when the rebuild is done
	}, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, int64(1), s.Stats().Guards[kvstore.GuardBelowLogStart])
	require.NoError(t, s.TailErr())
	require.Equal(t, map[string]User{"survivor": {FirstName: "survivor"}}, contents(t, s))

	// And it keeps following afterwards.
	acked(t)(w.Put(ctx, "later", User{FirstName: "later"}))
	require.Eventually(t, func() bool {
		_, ok, err := s.Get(ctx, "later")
		return err == nil && ok
	}, 10*time.Second, 5*time.Millisecond)
}

// A gap in one partition rebuilds that partition alone: the others keep
// their buckets and read on from where they were.
func TestAGapInOnePartitionRebuildsThatPartitionOnly(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("holding fetches and DeleteRecords")
	ctx := ctxT(t)
	const sMaxWait = 777 // ms: marks s's fetches, the ones to hold
	w := e.open("", kvstore.Partitions(2))
	s := e.open("", kvstore.KafkaOpts(kgo.FetchMaxWait(sMaxWait*time.Millisecond)))
	for i := range 10 {
		acked(t)(w.Put(ctx, fmt.Sprint("before-", i), User{FirstName: "before"}))
	}
	require.Eventually(t, func() bool { return len(contents(t, s)) == 10 }, 10*time.Second, 5*time.Millisecond)

	kc := e.cluster.Kafka()
	held, release := holdFetches(kc, sMaxWait)
	require.Eventually(t, func() bool { return held.Load() >= 1 }, 10*time.Second, time.Millisecond)
	for i := range 10 {
		acked(t)(w.Put(ctx, fmt.Sprint("after-", i), User{FirstName: "after"}))
	}
	end := e.endOffsets()
	require.NoError(t, kc.DeleteRecords(e.topic, 0, end[0]-1)) // partition 0 keeps its last record only
	close(release)

	require.Eventually(t, func() bool { return s.Stats().Restore.Mode == "partition" }, 10*time.Second, 5*time.Millisecond)
	st := s.Stats().Restore
	require.Equal(t, kvstore.GuardBelowLogStart, st.Guard)
	require.EqualValues(t, 1, st.Records, "only partition 0's surviving record was read")
	require.Equal(t, int64(1), s.Stats().Guards[kvstore.GuardBelowLogStart])

	fresh := e.open("") // what the topic holds now
	want := contents(t, fresh)
	require.Eventually(t, func() bool { return fmt.Sprint(contents(t, s)) == fmt.Sprint(want) }, 10*time.Second, 5*time.Millisecond,
		"partition 1 read on, partition 0 holds what survived")
	require.NoError(t, s.TailErr())
}
