package kvstore_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

func TestPutThenGetReturnsTheValue(t *testing.T) {
	e := newEnv(t)
	s := e.open("")
	ctx := ctxT(t)
	ada := User{FirstName: "Ada", LastName: "Lovelace", Age: 36, Email: ptr("ada@example.com")}

	acked(t)(s.Put(ctx, "user-123", ada))
	got, ok, err := s.Get(ctx, "user-123")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, ada, got)

	ada.Age = 37
	acked(t)(s.Put(ctx, "user-123", ada))
	got, _, err = s.Get(ctx, "user-123")
	require.NoError(t, err)
	require.Equal(t, int32(37), got.Age)
}

func TestGetOfAMissingKeyIsNotFound(t *testing.T) {
	s := newEnv(t).open("")
	_, ok, err := s.Get(ctxT(t), "nobody")
	require.NoError(t, err)
	require.False(t, ok)
}

func TestDeleteWritesATombstoneAndHidesTheKey(t *testing.T) {
	e := newEnv(t)
	s := e.open("")
	ctx := ctxT(t)
	acked(t)(s.Put(ctx, "user-1", User{FirstName: "A", LastName: "B", Age: 1}))
	acked(t)(s.Delete(ctx, "user-1"))
	_, ok, err := s.Get(ctx, "user-1")
	require.NoError(t, err)
	require.False(t, ok)

	// The topic holds a real tombstone: key with a null value.
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...), kgo.ConsumeTopics(e.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	var recs []*kgo.Record
	for len(recs) < 2 {
		fs := cl.PollFetches(ctx)
		require.NoError(t, fs.Err())
		recs = append(recs, fs.Records()...)
	}
	require.Equal(t, "user-1", string(recs[1].Key))
	require.Nil(t, recs[1].Value)
}

func TestScanYieldsPrefixMatchesInKeyOrder(t *testing.T) {
	e := newEnv(t)
	s := e.open("", kvstore.Partitions(3))
	ctx := ctxT(t)
	for _, k := range []string{"user-3", "order-1", "user-1", "user-2", "user-10"} {
		acked(t)(s.Put(ctx, k, User{FirstName: k, Age: 1}))
	}
	acked(t)(s.Delete(ctx, "user-2"))

	var keys []string
	for e, err := range s.Scan(ctx, "user-") {
		require.NoError(t, err)
		require.Equal(t, e.Key, e.Value.FirstName)
		keys = append(keys, e.Key)
	}
	require.Equal(t, []string{"user-1", "user-10", "user-3"}, keys)

	keys = nil
	for e, err := range s.Scan(ctx, "user-", kvstore.After("user-10")) {
		require.NoError(t, err)
		keys = append(keys, e.Key)
	}
	require.Equal(t, []string{"user-3"}, keys)
}

// randomOps applies n random Puts and Deletes over a small key space through
// s and to model.
func randomOps(t *testing.T, s *kvstore.Store[User], model map[string]User, n int, rng *rand.Rand) {
	ctx := ctxT(t)
	for i := range n {
		k := fmt.Sprintf("user-%03d", rng.IntN(200))
		if rng.IntN(4) == 0 {
			acked(t)(s.Delete(ctx, k))
			delete(model, k)
			continue
		}
		u := User{FirstName: k, LastName: "v" + fmt.Sprint(i), Age: rng.Int32N(100)}
		if rng.IntN(2) == 0 {
			u.Email = ptr(k + "@example.com")
		}
		acked(t)(s.Put(ctx, k, u))
		model[k] = u
	}
}

func TestAFreshCacheRestoredFromTheTopicEqualsTheModel(t *testing.T) {
	for _, parts := range []int32{1, 4} {
		t.Run(fmt.Sprintf("partitions=%d", parts), func(t *testing.T) {
			e := newEnv(t)
			w := e.open("", kvstore.Partitions(parts))
			model := map[string]User{}
			randomOps(t, w, model, 1500, rand.New(rand.NewPCG(1, uint64(parts))))
			require.Equal(t, model, contents(t, w))

			// At the smallest restore memory, which 1,500 records still fit
			// in (spilled runs and their merge: restorelarge_test.go).
			r := e.open("", kvstore.RestoreMemory(1<<20))
			require.Equal(t, model, contents(t, r))
			st := r.Stats().Restore
			require.Equal(t, "full", st.Mode)
			require.Equal(t, "no cache", st.Reason)
			require.EqualValues(t, 1500, st.Records)
		})
	}
}

func TestRestoreAfterCompactionGivesTheSameStateFromFewerRecords(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("forced compaction; TestRealCleanerCompactionKeepsTheState covers a real broker")
	w := e.open("", kvstore.TopicConfig("delete.retention.ms", "0"))
	model := map[string]User{}
	randomOps(t, w, model, 1000, rand.New(rand.NewPCG(7, 7)))

	before := e.open("")
	require.Equal(t, model, contents(t, before))
	e.cluster.Kafka().Compact()
	after := e.open("")
	require.Equal(t, model, contents(t, after))
	require.Less(t, after.Stats().Restore.Records, before.Stats().Restore.Records)
}

func TestReopeningACacheReadsOnlyTheNewRecords(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	w := e.open("")
	model := map[string]User{}
	rng := rand.New(rand.NewPCG(3, 3))
	randomOps(t, w, model, 300, rng)

	first, err := kvstore.Open[User](ctxT(t), e.topic, e.opts(dir)...)
	require.NoError(t, err)
	require.Equal(t, "full", first.Stats().Restore.Mode)
	require.NoError(t, first.Close())

	randomOps(t, w, model, 40, rng)
	second := e.open(dir)
	st := second.Stats().Restore
	require.Equal(t, "delta", st.Mode)
	require.EqualValues(t, 40, st.Records)
	require.Equal(t, model, contents(t, second))
}

func TestTwoStoresOnOneTopicConverge(t *testing.T) {
	e := newEnv(t)
	a, b := e.open(""), e.open("")
	ctx := ctxT(t)
	acked(t)(a.Put(ctx, "user-1", User{FirstName: "from-a", Age: 1}))
	require.Eventually(t, func() bool {
		u, ok, err := b.Get(ctx, "user-1")
		return err == nil && ok && u.FirstName == "from-a"
	}, 10*time.Second, 5*time.Millisecond)

	acked(t)(b.Delete(ctx, "user-1"))
	require.Eventually(t, func() bool {
		_, ok, err := a.Get(ctx, "user-1")
		return err == nil && !ok
	}, 10*time.Second, 5*time.Millisecond)
}

func TestRecordsWrittenWithTheOldSchemaReadThroughTheNewOne(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	v1, err := kvstore.Open[UserV1](ctx, e.topic, kvstore.Brokers(e.seeds...),
		kvstore.Registry(e.regURL), kvstore.ValueSchema(testdata.UserV1Schema), kvstore.Dir(t.TempDir()))
	require.NoError(t, err)
	defer v1.Close()
	acked(t)(v1.Put(ctx, "user-123", UserV1{FirstName: "Ada", LastName: "Lovelace", Age: 36}))

	v2 := e.open("")
	acked(t)(v2.Put(ctx, "user-456", User{FirstName: "Grace", LastName: "Hopper", Age: 85, Email: ptr("grace@example.com")}))
	got, ok, err := v2.Get(ctx, "user-123")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, User{FirstName: "Ada", LastName: "Lovelace", Age: 36}, got)

	// The v1 reader sees the v2 record through resolution too (email dropped).
	require.Eventually(t, func() bool {
		u, ok, err := v1.Get(ctx, "user-456")
		return err == nil && ok && u == UserV1{FirstName: "Grace", LastName: "Hopper", Age: 85}
	}, 10*time.Second, 5*time.Millisecond)
}

func TestAnIncompatibleSchemaIsRefusedBeforeItReachesTheRegistry(t *testing.T) {
	e := newEnv(t)
	e.open("")
	_, err := kvstore.Open[map[string]any](ctxT(t), e.topic, kvstore.Brokers(e.seeds...),
		kvstore.Registry(e.regURL), kvstore.ValueSchema(testdata.UserV3IncompatibleSchema), kvstore.Dir(t.TempDir()))
	require.ErrorIs(t, err, kvstore.ErrIncompatibleSchema)
	require.Contains(t, err.Error(), serde.SubjectFor(e.topic))
	require.NotContains(t, e.schemaVersions(serde.SubjectFor(e.topic)), 2, "no second version may be registered")
}

func TestAValueThatBreaksTheSchemaProducesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	s, err := kvstore.Open[map[string]any](ctx, e.topic, e.opts("")...)
	require.NoError(t, err)
	defer s.Close()
	before := e.endOffsets()

	_, err = s.Put(ctx, "user-1", map[string]any{"first_name": "Ada", "last_name": "L", "age": "thirty-six"})
	require.ErrorIs(t, err, kvstore.ErrInvalidValue)
	_, err = s.Put(ctx, "user-1", map[string]any{"first_name": "Ada"}) // missing fields
	require.ErrorIs(t, err, kvstore.ErrInvalidValue)
	require.ErrorIs(t, errOf(s.Put(ctx, "", map[string]any{})), kvstore.ErrEmptyKey)

	require.Equal(t, before, e.endOffsets())
	_, ok, err := s.Get(ctx, "user-1")
	require.NoError(t, err)
	require.False(t, ok)
}

func TestAnExistingTopicThatIsNotCompactedIsRefused(t *testing.T) {
	e := newEnv(t)
	_, err := e.admin().CreateTopic(ctxT(t), 1, -1, map[string]*string{"cleanup.policy": kadm.StringPtr("delete")}, e.topic)
	require.NoError(t, err)
	_, err = kvstore.Open[User](ctxT(t), e.topic, e.opts("")...)
	require.ErrorIs(t, err, kvstore.ErrNotCompacted)
	require.Contains(t, err.Error(), fmt.Sprintf("%q", e.topic))
	require.Contains(t, err.Error(), `cleanup.policy="delete"`)
}

func TestEveryCallAfterCloseReturnsErrClosed(t *testing.T) {
	s := newEnv(t).open("")
	ctx := ctxT(t)
	acked(t)(s.Put(ctx, "k", User{FirstName: "x"}))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")

	require.ErrorIs(t, errOf(s.Put(ctx, "k", User{})), kvstore.ErrClosed)
	require.ErrorIs(t, errOf(s.Delete(ctx, "k")), kvstore.ErrClosed)
	_, _, err := s.Get(ctx, "k")
	require.ErrorIs(t, err, kvstore.ErrClosed)
	for _, err := range s.Scan(ctx, "") {
		require.ErrorIs(t, err, kvstore.ErrClosed)
	}
}

func TestRecordsFromAnotherProducerAppearInGet(t *testing.T) {
	e := newEnv(t)
	s := e.open("")
	ctx := ctxT(t)
	// A foreign writer frames the value itself, as the seed's Python producer does.
	other := e.open("")
	acked(t)(other.Put(ctx, "seed", User{FirstName: "via-other"}))

	cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...), kgo.DefaultProduceTopic(e.topic))
	require.NoError(t, err)
	defer cl.Close()
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Key: []byte("seed")}).FirstErr()) // raw tombstone
	require.Eventually(t, func() bool {
		_, ok, err := s.Get(ctx, "seed")
		return err == nil && !ok
	}, 10*time.Second, 5*time.Millisecond)
}

func TestCompressionCodecsRoundTrip(t *testing.T) {
	codecs := map[string]kgo.CompressionCodec{"gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
		"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression()}
	for name, c := range codecs {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			w := e.open("", kvstore.KafkaOpts(kgo.ProducerBatchCompression(c)))
			acked(t)(w.Put(ctxT(t), "k", User{FirstName: strings.Repeat("z", 500)}))
			r := e.open("")
			got, ok, err := r.Get(ctxT(t), "k")
			require.NoError(t, err)
			require.True(t, ok)
			require.Len(t, got.FirstName, 500)
		})
	}
}

func TestAnIllegalTopicNameIsRefused(t *testing.T) {
	e := newEnv(t)
	for _, topic := range []string{"", "..", "../escape", "with space", strings.Repeat("x", 250)} {
		_, err := kvstore.Open[User](ctxT(t), topic, e.opts("")...)
		require.ErrorIs(t, err, kvstore.ErrBadConfig, "topic %q", topic)
	}
}

func TestPutAsyncMakesEveryAcknowledgedWriteVisible(t *testing.T) {
	e := newEnv(t)
	s := e.open("")
	ctx := ctxT(t)
	const n = 2000
	errs := make(chan error, n+2)
	for i := range n {
		k := fmt.Sprintf("user-%04d", i)
		if i%10 == 9 {
			s.DeleteAsync(ctx, fmt.Sprintf("user-%04d", i-1), func(_ kvstore.Position, err error) { errs <- err })
			continue
		}
		s.PutAsync(ctx, k, User{FirstName: k, Age: int32(i)}, func(_ kvstore.Position, err error) { errs <- err })
	}
	for range n {
		require.NoError(t, <-errs)
	}
	for i := range n {
		k := fmt.Sprintf("user-%04d", i)
		u, ok, err := s.Get(ctx, k)
		require.NoError(t, err)
		if i%10 == 8 || i%10 == 9 { // deleted, or never written
			require.False(t, ok, k)
			continue
		}
		require.True(t, ok, k)
		require.Equal(t, k, u.FirstName)
	}

	// Bad input and a closed store call done at once.
	sm, err := kvstore.Open[map[string]any](ctx, e.topic, e.opts("")...)
	require.NoError(t, err)
	sm.PutAsync(ctx, "k", map[string]any{"first_name": 1}, func(_ kvstore.Position, err error) { errs <- err })
	require.ErrorIs(t, <-errs, kvstore.ErrInvalidValue)
	require.NoError(t, sm.Close())
	valid := map[string]any{"first_name": "a", "last_name": "b", "age": 1, "email": nil}
	sm.PutAsync(ctx, "k", valid, func(_ kvstore.Position, err error) { errs <- err })
	require.ErrorIs(t, <-errs, kvstore.ErrClosed)
	require.ErrorIs(t, errOf(sm.Put(ctx, "k", map[string]any{})), kvstore.ErrClosed, "closed wins over a bad value")
}
