package kvstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/kvstore"
)

// writerAndBusyReader opens three stores on a topic of 6 partitions and
// returns two: a writes, b reads; the third keeps writing keys of its own
// until the test ends (busy), so that b's follower always has records to
// apply.
func writerAndBusyReader(t *testing.T) (a, b *kvstore.Store[User]) {
	e := newEnv(t)
	a = e.open("", kvstore.Partitions(6))
	b = e.open("")
	busy(t, e.open(""))
	return a, b
}

// try returns try i's key (one of 20) and value.
func try(i int) (string, User) { return fmt.Sprint("user-", i%20), User{FirstName: fmt.Sprint("v", i)} }

// busy keeps w writing keys of its own until the test ends.
func busy(t *testing.T, w *kvstore.Store[User]) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			_, _ = w.Put(ctx, fmt.Sprint("noise-", i%500), User{FirstName: fmt.Sprint(i)})
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// A write through one store, read through another that first waits for the
// write's Position, is the value written: every time, while a third store
// keeps the followers busy.
func TestAWriteIsReadThroughAnotherStoreThatWaitsForItsPosition(t *testing.T) {
	a, b := writerAndBusyReader(t)
	ctx := ctxT(t)
	for i := range 300 {
		key, want := try(i)
		pos := acked(t)(a.Put(ctx, key, want))
		require.NoError(t, b.WaitFor(ctx, pos))
		got, ok, err := b.Get(ctx, key)
		require.NoError(t, err)
		require.True(t, ok, "try %d: %s missing after WaitFor", i, key)
		require.Equal(t, want, got, "try %d", i)

		if i%10 == 9 { // a delete, the same way
			pos = acked(t)(a.Delete(ctx, key))
			require.NoError(t, b.WaitFor(ctx, pos))
			_, ok, err = b.Get(ctx, key)
			require.NoError(t, err)
			require.False(t, ok, "try %d: %s still there after its tombstone's WaitFor", i, key)
		}
	}
}

// Sync is a read barrier: after it returns, every write acknowledged
// anywhere before it was called is visible, with or without keys named.
func TestAfterSyncEveryWriteAcknowledgedBeforeItIsVisible(t *testing.T) {
	a, b := writerAndBusyReader(t)
	ctx := ctxT(t)
	for i := range 300 {
		key, want := try(i)
		acked(t)(a.Put(ctx, key, want)) // its Position is not handed over
		var err error
		if i%2 == 0 {
			_, err = b.Sync(ctx, key)
		} else {
			_, err = b.Sync(ctx)
		}
		require.NoError(t, err)
		got, ok, err := b.Get(ctx, key)
		require.NoError(t, err)
		require.True(t, ok, "try %d", i)
		require.Equal(t, want, got, "try %d", i)
	}
	_, err := b.Sync(ctx, "")
	require.ErrorIs(t, err, kvstore.ErrEmptyKey)
}

// A session that wrote several keys holds one merged Position; a store that
// has applied it shows all of them.
func TestAMergedPositionCoversEveryWriteItMerged(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := e.open("", kvstore.Partitions(6))
	b := e.open("")
	var session kvstore.Position
	want := map[string]User{}
	for i := range 30 {
		key := fmt.Sprint("k", i)
		want[key] = User{FirstName: key}
		var err error
		session, err = session.Merge(acked(t)(a.Put(ctx, key, want[key])))
		require.NoError(t, err)
	}
	require.Greater(t, len(session.Offsets()), 1, "the keys span partitions")
	parsed, err := kvstore.ParsePosition(session.String())
	require.NoError(t, err)
	require.NoError(t, b.WaitFor(ctx, parsed))
	require.Equal(t, want, contents(t, b))
}

// A Position of another topic, or of this topic before it was deleted and
// recreated, is refused rather than waited for.
func TestAPositionOfAnotherTopicOrAnEarlierIncarnationIsRefused(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("kfake's DeleteTopic")
	ctx := ctxT(t)
	a := e.open("")
	pos := acked(t)(a.Put(ctx, "k", User{FirstName: "old"}))

	other, err := kvstore.Open[User](ctx, "other-topic", e.opts("")...)
	require.NoError(t, err)
	defer other.Close()
	require.ErrorIs(t, other.WaitFor(ctx, pos), kvstore.ErrForeignPosition)
	_, err = pos.Merge(acked(t)(other.Put(ctx, "k", User{})))
	require.ErrorIs(t, err, kvstore.ErrForeignPosition)

	require.NoError(t, a.Close())
	require.NoError(t, e.cluster.Kafka().DeleteTopic(e.topic))
	again := e.open("") // creates the topic again: a new topic ID
	require.ErrorIs(t, again.WaitFor(ctx, pos), kvstore.ErrForeignPosition)
	require.NoError(t, again.WaitFor(ctx, kvstore.Position{}), "the zero Position is always applied")
}

// WaitFor waits no longer than its context, returns a stopped partition's
// error instead of waiting for ever, and ErrClosed once the store is closed.
func TestWaitForIsBoundedAndSaysWhyItCannotWait(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("holding fetches")
	ctx := ctxT(t)
	w := e.open("")
	const sMaxWait = 778 // ms: marks s's fetches, the ones to hold
	s := e.open("", kvstore.KafkaOpts(kgo.FetchMaxWait(sMaxWait*time.Millisecond)))
	held, release := holdFetches(e.cluster.Kafka(), sMaxWait)
	require.Eventually(t, func() bool { return held.Load() >= 1 }, 10*time.Second, time.Millisecond)
	pos := acked(t)(w.Put(ctx, "k", User{FirstName: "held back"}))
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, s.WaitFor(short, pos), context.DeadlineExceeded)
	close(release)
	require.NoError(t, s.WaitFor(ctx, pos))

	// A poison record stops the partition: waiting past it fails at once.
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...))
	require.NoError(t, err)
	defer cl.Close()
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: e.topic, Key: []byte("bad"), Value: []byte("not avro")}).FirstErr())
	after := acked(t)(w.Put(ctx, "k2", User{}))
	err = s.WaitFor(ctx, after)
	require.ErrorIs(t, err, kvstore.ErrStopped)
	require.ErrorIs(t, err, kvstore.ErrPoison)
	require.ErrorContains(t, err, "partition 0 stopped")

	require.NoError(t, s.Close())
	require.ErrorIs(t, s.WaitFor(ctx, after), kvstore.ErrClosed)
	_, err = s.Sync(ctx)
	require.ErrorIs(t, err, kvstore.ErrClosed)
}

// op is one operation of a history: a write (Put or Delete) or a
// consistent read (Sync, then Get), through one of several stores.
type op struct {
	key        string
	write      bool
	value      string // "" for a delete, or for a read that found nothing
	start, end time.Time
	offset     int64 // a write's offset in the key's partition
}

// The history check: concurrent writes and consistent reads on a few keys
// through several stores. Every consistent read must return the value of
// the last write acknowledged before the read began (in the topic's order,
// which the writes' Positions give), or of a write concurrent with the
// read; never an older one.
func TestConsistentReadsNeverReturnAValueOlderThanTheLastAcknowledgedWrite(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	stores := []*kvstore.Store[User]{e.open("", kvstore.Partitions(3)), e.open(""), e.open("")}
	keys := []string{"a", "b", "c", "d"}
	var (
		mu      sync.Mutex
		history []op
		seq     atomic.Int64
		wg      sync.WaitGroup
	)
	record := func(o op) { mu.Lock(); history = append(history, o); mu.Unlock() }
	deadline := time.Now().Add(4 * time.Second)
	for w := range 3 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for time.Now().Before(deadline) {
				s, key := stores[rng.IntN(len(stores))], keys[rng.IntN(len(keys))]
				o := op{key: key, write: true, start: time.Now()}
				var pos kvstore.Position
				var err error
				if rng.IntN(4) == 0 {
					pos, err = s.Delete(ctx, key)
				} else {
					o.value = fmt.Sprint("v", seq.Add(1))
					pos, err = s.Put(ctx, key, User{FirstName: o.value})
				}
				o.end = time.Now()
				if !assertNoError(t, err) {
					return
				}
				for _, off := range pos.Offsets() {
					o.offset = off - 1
				}
				record(o)
			}
		})
	}
	for r := range 3 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 2))
			for time.Now().Before(deadline) {
				s, key := stores[rng.IntN(len(stores))], keys[rng.IntN(len(keys))]
				o := op{key: key, start: time.Now()}
				_, err := s.Sync(ctx, key)
				if !assertNoError(t, err) {
					return
				}
				u, ok, err := s.Get(ctx, key)
				if !assertNoError(t, err) {
					return
				}
				if ok {
					o.value = u.FirstName
				}
				o.end = time.Now()
				record(o)
			}
		})
	}
	wg.Wait()

	reads := 0
	for _, r := range history {
		if r.write {
			continue
		}
		reads++
		// floor: the offset of the last write of the key acknowledged
		// before the read began; -1 if none was.
		floor := int64(-1)
		for _, w := range history {
			if w.write && w.key == r.key && w.end.Before(r.start) {
				floor = max(floor, w.offset)
			}
		}
		ok := floor == -1 && r.value == "" // the key's state before any write
		for _, w := range history {
			if w.write && w.key == r.key && w.offset >= floor && w.start.Before(r.end) && w.value == r.value {
				ok = true
				break
			}
		}
		require.True(t, ok, "a consistent read of %q returned %q, older than the write at offset %d acknowledged before it began",
			r.key, r.value, floor)
	}
	t.Logf("history: %d operations, %d consistent reads checked", len(history), reads)
	require.Greater(t, reads, 50)
}

// assertNoError reports err, if any, without stopping the goroutine's
// caller (require must not be called off the test's goroutine).
func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}

// A write acknowledged while another producer's transaction is open lies
// beyond the last stable offset; Sync still covers it: it waits for the
// transaction to end (here, past its bound) instead of returning early.
func TestSyncCoversAWriteAcknowledgedAfterAnOpenTransactionBegan(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	w, s := e.open(""), e.open("")
	tx, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...), kgo.DefaultProduceTopic(e.topic), kgo.TransactionalID("open-tx"))
	require.NoError(t, err)
	defer tx.Close()
	require.NoError(t, tx.BeginTransaction())
	require.NoError(t, tx.ProduceSync(ctx, &kgo.Record{Key: []byte("in-tx"), Value: nil}).FirstErr())

	acked(t)(w.Put(ctx, "k", User{FirstName: "after the transaction began"}))
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = s.Sync(short, "k")
	require.ErrorIs(t, err, context.DeadlineExceeded, "the barrier includes the write, which waits behind the transaction")

	require.NoError(t, tx.EndTransaction(ctx, kgo.TryCommit))
	_, err = s.Sync(ctx, "k")
	require.NoError(t, err)
	_, ok, err := s.Get(ctx, "k")
	require.NoError(t, err)
	require.True(t, ok)
}
