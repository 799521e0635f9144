package kvstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/compactkv/compactkv/kvstore"
)

func allIn(st kvstore.Stats, state kvstore.PartitionState) bool {
	for _, p := range st.Partitions {
		if p.State != state {
			return false
		}
	}
	return len(st.Partitions) > 0
}

// stateLog records a store's state changes.
type stateLog struct {
	mu      sync.Mutex
	changes []kvstore.StateChange
}

func (l *stateLog) listen(c kvstore.StateChange) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes = append(l.changes, c)
}

func (l *stateLog) saw(from, to kvstore.PartitionState) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.changes {
		if c.From == from && c.To == to {
			return true
		}
	}
	return false
}

func TestStatsShowAStalledFollowerWhileTheBrokerIsGoneAndClearWhenItIsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a broker")
	}
	b := newRestartable(t)
	b.start()
	var log stateLog
	s := b.open(kvstore.OnStateChange(log.listen))
	w := b.open()
	ctx := ctxT(t)

	acked(t)(w.Put(ctx, "a", User{FirstName: "before"}))
	require.Eventually(t, func() bool {
		if _, ok, _ := s.Get(ctx, "a"); !ok {
			return false
		}
		st := s.Stats() // taken after the read: the checkpoint moves just after the file
		var applied int64
		for _, p := range st.Partitions {
			if p.Lag != 0 {
				return false
			}
			applied += p.Applied
		}
		return applied == 1 && allIn(st, kvstore.PartitionFollowing)
	}, 10*time.Second, 5*time.Millisecond)
	st := s.Stats()
	require.Equal(t, "restartable", st.Topic)
	require.Len(t, st.Partitions, 2)
	var applied int64
	for _, p := range st.Partitions {
		require.Nil(t, p.Err)
		require.WithinDuration(t, time.Now(), p.CaughtUpAt, 10*time.Second)
		applied += p.Applied
	}
	require.EqualValues(t, 1, applied, "one record in the topic, applied")
	require.NoError(t, s.TailErr())

	b.stop()
	require.Eventually(t, func() bool { return allIn(s.Stats(), kvstore.PartitionStalled) },
		20*time.Second, 20*time.Millisecond, "a follower that cannot reach the broker shows it")
	require.Error(t, s.TailErr())
	for _, p := range s.Stats().Partitions {
		require.Error(t, p.Err)
	}
	u, ok, err := s.Get(ctx, "a")
	require.NoError(t, err, "reads are served from the cache meanwhile")
	require.True(t, ok)
	require.Equal(t, "before", u.FirstName)

	b.start()
	require.Eventually(t, func() bool { return allIn(s.Stats(), kvstore.PartitionFollowing) && s.TailErr() == nil },
		30*time.Second, 20*time.Millisecond, "the stall clears once the broker is back")
	acked(t)(w.Put(ctx, "a", User{FirstName: "after"}))
	require.Eventually(t, func() bool {
		u, _, _ := s.Get(ctx, "a")
		return u.FirstName == "after"
	}, 30*time.Second, 10*time.Millisecond, "and it follows again")
	require.True(t, log.saw(kvstore.PartitionFollowing, kvstore.PartitionStalled))
	require.True(t, log.saw(kvstore.PartitionStalled, kvstore.PartitionFollowing))
}

func TestAPoisonRecordStopsTheFollowerAndStatsSayWhere(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	var log stateLog
	s := e.open("", kvstore.OnStateChange(log.listen))
	acked(t)(s.Put(ctx, "good", User{FirstName: "good"}))

	cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...))
	require.NoError(t, err)
	defer cl.Close()
	rec := &kgo.Record{Topic: e.topic, Key: []byte("bad"), Value: []byte("not avro")}
	require.NoError(t, cl.ProduceSync(ctx, rec).FirstErr())

	require.Eventually(t, func() bool { return s.Stats().Partitions[0].State == kvstore.PartitionStopped },
		10*time.Second, 5*time.Millisecond)
	p := s.Stats().Partitions[0]
	var pe *kvstore.PoisonError
	require.ErrorAs(t, p.Err, &pe)
	require.Equal(t, rec.Offset, pe.Offset)
	require.Equal(t, rec.Offset, p.Applied, "the cache stops before the poison record")
	require.ErrorIs(t, s.TailErr(), kvstore.ErrPoison)
	require.True(t, log.saw(kvstore.PartitionFollowing, kvstore.PartitionStopped))
	_, ok, err := s.Get(ctx, "good")
	require.NoError(t, err)
	require.True(t, ok)
}

// With the broker gone, nothing waits for ever: a write ends at the delivery
// bound, Close at its own bound, the writes Close cuts off fail, and a read
// made while Close runs fails at once instead of queueing behind it.
func TestWithTheBrokerGoneWritesAndCloseReturnWithinTheirBounds(t *testing.T) {
	if testing.Short() {
		t.Skip("stops a broker")
	}
	b := newRestartable(t)
	b.start()
	const delivery, closeBound = 2 * time.Second, time.Second
	s := b.open(kvstore.DeliveryTimeout(delivery))
	c := b.open(kvstore.CloseTimeout(closeBound))
	ctx := ctxT(t)
	acked(t)(s.Put(ctx, "k", User{FirstName: "up"}))
	b.stop()

	// A Put with no deadline of its own.
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- errOf(s.Put(context.Background(), "k", User{FirstName: "down"})) }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, kvstore.ErrDeliveryTimeout)
		require.Less(t, time.Since(began), delivery+3*time.Second)
	case <-time.After(delivery + 10*time.Second):
		t.Fatal("a Put with the broker gone did not end at DeliveryTimeout")
	}
	_, _, err := s.Get(ctx, "k")
	require.NoError(t, err)

	// A write in flight on c, then Close.
	inFlight := make(chan error, 1)
	c.PutAsync(context.Background(), "k2", User{FirstName: "lost"}, func(_ kvstore.Position, err error) { inFlight <- err })
	closed := make(chan error, 1)
	began = time.Now()
	go func() { closed <- c.Close() }()
	require.Eventually(t, func() bool { return c.Stats().Closed }, 5*time.Second, time.Millisecond)
	var getTook atomic.Int64
	for range 3 { // reads and writes while Close runs fail at once
		t0 := time.Now()
		_, _, err := c.Get(ctx, "k")
		require.ErrorIs(t, err, kvstore.ErrClosed)
		for _, err := range c.Scan(ctx, "") {
			require.ErrorIs(t, err, kvstore.ErrClosed)
		}
		require.ErrorIs(t, errOf(c.Put(ctx, "k3", User{})), kvstore.ErrClosed)
		getTook.Store(max(getTook.Load(), int64(time.Since(t0))))
	}
	require.Less(t, time.Duration(getTook.Load()), 100*time.Millisecond)
	select {
	case err := <-closed:
		require.NoError(t, err, "writes cut off are their callers' news, not Close's error")
		require.Less(t, time.Since(began), closeBound+time.Second)
	case <-time.After(closeBound + 10*time.Second):
		t.Fatal("Close with the broker gone did not return within CloseTimeout")
	}
	select {
	case err := <-inFlight:
		require.ErrorIs(t, err, kvstore.ErrClosed)
	default:
		t.Fatal("the write Close cut off had no answer when Close returned")
	}
	require.NoError(t, c.Close(), "Close is idempotent")
}

// A follower that falls behind for longer than delete.retention.ms may pass
// a region whose tombstones compaction has already removed; carrying on
// would serve the deleted key for ever. It rebuilds instead.
func TestAFollowerBehindLongerThanDeleteRetentionRebuildsAndForgetsDeletedKeys(t *testing.T) {
	// On one partition the store rebuilds whole; on two, only the partition
	// that fell behind (the keys below all land on partition 0).
	for _, c := range []struct {
		partitions int32
		mode       string
	}{{1, "full"}, {2, "partition"}} {
		t.Run(fmt.Sprint(c.partitions, " partitions"), func(t *testing.T) { followerBehindRetention(t, c.partitions, c.mode) })
	}
}

func followerBehindRetention(t *testing.T, partitions int32, mode string) {
	e := newEnv(t)
	e.requireKfake("holding fetches and forced compaction")
	t.Cleanup(kvstore.SetStaleRebuildFloor(0)) // registered first, so it runs after the stores close
	const retention = 1500 * time.Millisecond
	ctx := ctxT(t)
	w := e.open("", kvstore.TopicConfig("delete.retention.ms", "1500"), kvstore.Partitions(partitions))
	const sMaxWait = 777 // ms: marks s's fetches, the ones to hold
	s := e.open("", kvstore.KafkaOpts(kgo.FetchMaxWait(sMaxWait*time.Millisecond)))
	// anchor keeps the log start where it is: compaction leaves a hole in
	// the middle of the log, which a reader cannot tell from records it read.
	acked(t)(w.Put(ctx, "anchor2", User{FirstName: "anchor2"}))
	acked(t)(w.Put(ctx, "gone2", User{FirstName: "deleted later"}))
	require.Eventually(t, func() bool {
		_, ok, _ := s.Get(ctx, "gone2")
		return ok && s.Stats().Partitions[0].Lag == 0
	}, 10*time.Second, 5*time.Millisecond)

	// Hold s's fetches: s stops seeing new records (a paused process).
	kc := e.cluster.Kafka()
	held, release := holdFetches(kc, sMaxWait)
	// One of s's fetches is held, so none is in flight to bring it news.
	require.Eventually(t, func() bool { return held.Load() >= 1 }, 10*time.Second, time.Millisecond)

	acked(t)(w.Delete(ctx, "gone2"))
	deleted := time.Now()
	acked(t)(w.Put(ctx, "later2", User{FirstName: "later2"}))
	// The tombstone outlives delete.retention.ms, s is that far behind, and
	// compaction removes the tombstone with the value it deleted.
	require.Eventually(t, func() bool {
		p := s.Stats().Partitions[0]
		return time.Since(deleted) > retention && p.Lag > 0 && time.Since(p.CaughtUpAt) > retention
	}, 10*time.Second, 10*time.Millisecond)
	_, ok, err := s.Get(ctx, "gone2")
	require.NoError(t, err)
	require.True(t, ok, "s has not seen the delete")
	kc.Compact()
	close(release)

	require.Eventually(t, func() bool {
		_, gone, _ := s.Get(ctx, "gone2")
		_, later, _ := s.Get(ctx, "later2")
		// The rebuild's figures are published once it has swapped the file in.
		st := s.Stats().Restore
		return !gone && later && st.Guard == kvstore.GuardRetentionExceeded && st.Mode == mode
	}, 20*time.Second, 10*time.Millisecond, "the deleted key is gone once the follower catches up")
	require.GreaterOrEqual(t, s.Stats().Guards[kvstore.GuardRetentionExceeded], int64(1))
}

// A broker slow to list offsets (each listing takes longer than the
// follower's probe interval) must not keep the follower from reading.
func TestASlowOffsetListingDoesNotStarveTheFollower(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("slowing ListOffsets")
	ctx := ctxT(t)
	w := e.open("")
	s := e.open("")
	acked(t)(w.Put(ctx, "before", User{FirstName: "x"}))
	require.Eventually(t, func() bool { _, ok, _ := s.Get(ctx, "before"); return ok }, 10*time.Second, 10*time.Millisecond)

	var slowed atomic.Int32
	kc := e.cluster.Kafka()
	kc.ControlKey(kmsg.ListOffsets.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		slowed.Add(1)
		kc.SleepControl(func() { time.Sleep(1200 * time.Millisecond) })
		return nil, nil, false
	})
	require.Eventually(t, func() bool { return slowed.Load() >= 2 }, 10*time.Second, 10*time.Millisecond)
	acked(t)(w.Put(ctx, "after", User{FirstName: "y"}))
	require.Eventually(t, func() bool { _, ok, _ := s.Get(ctx, "after"); return ok }, 10*time.Second, 10*time.Millisecond,
		"the follower keeps reading while the offset listings are slow")
}

// While one partition is rebuilt alone (it fell behind past
// delete.retention.ms), the others read on, and none of their records is
// lost: not those the reader fetched in the poll that found the partition
// stale, nor those written during the rebuild.
func TestThePartitionsNotRebuiltLoseNoRecordsAndReadOnMeanwhile(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("stripping one partition from fetches")
	t.Cleanup(kvstore.SetStaleRebuildFloor(0)) // registered first, so it runs after the stores close
	ctx := ctxT(t)
	w := e.open("", kvstore.TopicConfig("delete.retention.ms", "1500"), kvstore.Partitions(2))
	const sMaxWait = 779 // ms: marks s's fetches
	// Without fetch sessions every fetch names its partitions, so that one
	// left out of a request comes back when it is no longer stripped.
	s := e.open("", kvstore.KafkaOpts(kgo.FetchMaxWait(sMaxWait*time.Millisecond), kgo.DisableFetchSessions()))

	// s's fetches leave partition 0 out until its rebuild has begun: it
	// falls behind while partition 1 keeps being read.
	var strip atomic.Bool
	strip.Store(true)
	kc := e.cluster.Kafka()
	kc.ControlKey(kmsg.Fetch.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		f := req.(*kmsg.FetchRequest)
		if f.MaxWaitMillis == sMaxWait && strip.Load() {
			for i := range f.Topics {
				f.Topics[i].Partitions = slices.DeleteFunc(f.Topics[i].Partitions,
					func(p kmsg.FetchRequestTopicPartition) bool { return p.Partition == 0 })
			}
		}
		return nil, nil, false
	})

	// A writer on both partitions, until the rebuild of partition 0 is over.
	var all kvstore.Position
	wrote := map[int32]int{}
	for i := 0; ; i++ {
		pos := acked(t)(w.Put(ctx, fmt.Sprint("k", i), User{FirstName: fmt.Sprint(i)}))
		for p := range pos.Offsets() {
			wrote[p]++
		}
		var err error
		all, err = all.Merge(pos)
		require.NoError(t, err)
		st := s.Stats()
		if st.Partitions[0].State == kvstore.PartitionRestoring {
			strip.Store(false) // its rebuild has begun (and reads with s's options too)
		}
		if st.Restore.Mode == "partition" && st.Restore.Guard == kvstore.GuardRetentionExceeded &&
			st.Partitions[0].State == kvstore.PartitionFollowing && wrote[0] > 10 && wrote[1] > 10 {
			break
		}
		require.Less(t, i, 100_000, "partition 0 was never rebuilt")
		time.Sleep(2 * time.Millisecond) // a steady trickle of writes, not a flood
	}
	strip.Store(false)
	for range 20 { // and some after the rebuild
		all, _ = all.Merge(acked(t)(w.Put(ctx, fmt.Sprint("after-", rand.Int()), User{})))
	}
	require.NoError(t, s.WaitFor(ctx, all))
	require.Equal(t, contents(t, w), contents(t, s), "every record of both partitions is in s")
}
