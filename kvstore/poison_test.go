package kvstore_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

// rawWriter creates the compacted test topic (a store opens on it) and
// returns a foreign producer to it.
func (e *env) rawWriter() *foreignProducer {
	e.t.Helper()
	require.NoError(e.t, e.open("").Close())
	return e.foreignProducer(nil)
}

type poisonCase struct {
	name   string
	key    []byte
	value  []byte
	reason string
}

// poisonCases are the records no store can serve, built from a good value v.
func poisonCases(v []byte) []poisonCase {
	wrongMagic := bytes.Clone(v)
	wrongMagic[0] = 1
	unknownID := bytes.Clone(v)
	binary.BigEndian.PutUint32(unknownID[1:5], 987654)
	return []poisonCase{
		{"not avro", []byte("p-json"), []byte(`{"first_name":"Ada","last_name":"L","age":36}`), "malformed value"},
		{"wrong magic byte", []byte("p-magic"), wrongMagic, "malformed value"},
		{"unknown schema id", []byte("p-id"), unknownID, "unknown schema"},
		{"truncated body", []byte("p-trunc"), v[:6], "malformed value"},
		{"header only", []byte("p-header"), v[:5], "malformed value"},
		{"empty key", []byte{}, v, "empty key"},
		{"empty key tombstone", []byte{}, nil, "empty key"},
		{"empty non-null value", []byte("p-empty"), []byte{}, "empty value"},
	}
}

func TestAPoisonRecordFailsARestoreNamingWhereItIs(t *testing.T) {
	base := newEnv(t)
	v, err := base.userCodec().Encode(User{FirstName: "Ada", LastName: "Lovelace", Age: 36})
	require.NoError(t, err)
	for i, pc := range poisonCases(v) {
		t.Run(pc.name, func(t *testing.T) {
			e := *base // a topic of its own on the same broker
			e.t, e.topic = t, fmt.Sprintf("%s-poison-%d", base.topic, i)
			w := e.rawWriter()
			w.put([]byte("good"), v)
			off := w.put(pc.key, pc.value)
			w.put([]byte("after"), v)

			_, err := kvstore.Open[User](ctxT(t), e.topic, e.opts("")...)
			require.ErrorIs(t, err, kvstore.ErrPoison)
			var pe *kvstore.PoisonError
			require.ErrorAs(t, err, &pe)
			require.Equal(t, e.topic, pe.Topic)
			require.EqualValues(t, 0, pe.Partition)
			require.Equal(t, off, pe.Offset)
			require.Contains(t, pe.Reason, pc.reason)
			require.Contains(t, err.Error(), fmt.Sprintf("topic %q partition 0 offset %d", e.topic, off))
			switch pc.reason {
			case "malformed value":
				require.ErrorIs(t, err, serde.ErrMalformed)
			case "unknown schema":
				require.ErrorIs(t, err, serde.ErrUnknownSchema)
				require.NotErrorIs(t, err, serde.ErrRegistryUnavailable)
			}

			log, logs := captureLogs()
			s := e.open("", kvstore.OnPoison(kvstore.PoisonSkip), kvstore.Logger(log))
			require.EqualValues(t, 1, s.Stats().PoisonSkipped)
			require.Contains(t, logs.String(), "skipped poison record")
			require.Contains(t, logs.String(), fmt.Sprintf("offset=%d", off))
			require.Contains(t, logs.String(), "partition=0")
			require.Contains(t, logs.String(), "topic="+e.topic)
			require.Equal(t, []string{"after", "good"}, slices.Sorted(maps.Keys(contents(t, s))),
				"the records around the poison are applied")
		})
	}
}

func TestSkippingPoisonLeavesTheCacheEqualToTheValidRecords(t *testing.T) {
	e := newEnv(t)
	good := e.userCodec()
	w := e.rawWriter()
	model := map[string]User{}
	var poisons int64
	for i := range 40 {
		u := User{FirstName: fmt.Sprint("n", i), LastName: "L", Age: int32(i)}
		v, err := good.Encode(u)
		require.NoError(t, err)
		k := fmt.Sprintf("k%02d", i%15)
		w.put([]byte(k), v)
		model[k] = u
		if i%7 == 3 {
			w.put([]byte(k), nil)
			delete(model, k)
		}
		pc := poisonCases(v)[i%len(poisonCases(v))]
		if len(pc.key) > 0 {
			pc.key = []byte(k) // poison under a live key must not touch it
		}
		w.put(pc.key, pc.value)
		poisons++
	}
	// Full restore, then a delta restore of more of the same, then the tail.
	dir := t.TempDir()
	s, err := kvstore.Open[User](ctxT(t), e.topic, e.opts(dir, kvstore.OnPoison(kvstore.PoisonSkip))...)
	require.NoError(t, err)
	require.Equal(t, model, contents(t, s))
	require.Equal(t, poisons, s.Stats().PoisonSkipped)
	require.NoError(t, s.Close())

	v, err := good.Encode(User{FirstName: "delta"})
	require.NoError(t, err)
	w.put([]byte("k01"), []byte("garbage"))
	w.put([]byte("k-delta"), v)
	model["k-delta"] = User{FirstName: "delta"}
	s = e.open(dir, kvstore.OnPoison(kvstore.PoisonSkip))
	require.Equal(t, "delta", s.Stats().Restore.Mode)
	require.EqualValues(t, 1, s.Stats().PoisonSkipped)
	require.Equal(t, model, contents(t, s))

	w.put([]byte("k02"), v[:7])
	w.put([]byte("k-tail"), v)
	model["k-tail"] = User{FirstName: "delta"}
	require.Eventually(t, func() bool {
		_, ok, err := s.Get(ctxT(t), "k-tail")
		return err == nil && ok
	}, 10*time.Second, 5*time.Millisecond)
	require.EqualValues(t, 2, s.Stats().PoisonSkipped)
	require.NoError(t, s.TailErr())
	require.Equal(t, model, contents(t, s))
}

func TestAPoisonRecordInADeltaRestoreCommitsNothingPastTheLastGoodCheckpoint(t *testing.T) {
	e := newEnv(t)
	good := e.userCodec()
	w := e.rawWriter()
	dir := t.TempDir()
	v, err := good.Encode(User{FirstName: "v1"})
	require.NoError(t, err)
	w.put([]byte("a"), v)
	s, err := kvstore.Open[User](ctxT(t), e.topic, e.opts(dir)...)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	checkpoint := e.endOffsets()[0]

	v2, err := good.Encode(User{FirstName: "v2"})
	require.NoError(t, err)
	w.put([]byte("a"), v2) // good, fetched in the same poll as the poison
	off := w.put([]byte("b"), []byte{0, 0, 0})
	_, err = kvstore.Open[User](ctxT(t), e.topic, e.opts(dir)...)
	var pe *kvstore.PoisonError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, off, pe.Offset)

	// The cache is as it was: its checkpoint did not move, so the next
	// (skipping) open reads again everything after the last good one.
	s = e.open(dir, kvstore.OnPoison(kvstore.PoisonSkip))
	st := s.Stats().Restore
	require.Equal(t, "delta", st.Mode)
	require.EqualValues(t, e.endOffsets()[0]-checkpoint, st.Records)
	got, ok, err := s.Get(ctxT(t), "a")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "v2", got.FirstName)
}

func TestAPoisonRecordStopsTheTailAndTheCacheKeepsItsLastGoodState(t *testing.T) {
	e := newEnv(t)
	s := e.open("")
	ctx := ctxT(t)
	acked(t)(s.Put(ctx, "a", User{FirstName: "v1"}))
	w := e.rawWriter()
	off := w.put([]byte("a"), []byte("not avro at all"))
	v, err := e.userCodec().Encode(User{FirstName: "after"})
	require.NoError(t, err)
	w.put([]byte("b"), v)

	require.Eventually(t, func() bool { return s.TailErr() != nil }, 10*time.Second, 5*time.Millisecond)
	var pe *kvstore.PoisonError
	require.ErrorAs(t, s.TailErr(), &pe)
	require.Equal(t, off, pe.Offset)
	require.Contains(t, s.TailErr().Error(), fmt.Sprintf("topic %q partition 0 offset %d", e.topic, off))
	got, ok, err := s.Get(ctx, "a")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "v1", got.FirstName)
	_, ok, err = s.Get(ctx, "b")
	require.NoError(t, err)
	require.False(t, ok, "nothing after the poison is applied")
	require.Equal(t, map[string]User{"a": {FirstName: "v1"}}, contents(t, s))
}

// The registry being away is not poison: it says nothing about the record,
// so even a skipping store fails rather than drop it.
func TestAnUnreachableRegistryIsNeverTakenForPoison(t *testing.T) {
	e := newEnv(t)
	e.requireSrfake("interceptors")
	ctx := ctxT(t)
	// A record written with another schema version: its ID is not yet known
	// to a new store's codec.
	v1, err := kvstore.Open[UserV1](ctx, e.topic, kvstore.Brokers(e.seeds...),
		kvstore.Registry(e.regURL), kvstore.ValueSchema(testdata.UserV1Schema), kvstore.Dir(t.TempDir()))
	require.NoError(t, err)
	acked(t)(v1.Put(ctx, "old", UserV1{FirstName: "Ada"}))
	require.NoError(t, v1.Close())
	e.open("") // registers v2 while the registry is up

	e.cluster.Registry().Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/schemas/ids/") {
			http.Error(w, `{"error_code":50001,"message":"down"}`, http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	defer e.cluster.Registry().ClearInterceptors()
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = kvstore.Open[User](short, e.topic, e.opts("", kvstore.OnPoison(kvstore.PoisonSkip))...)
	require.Error(t, err)
	require.NotErrorIs(t, err, kvstore.ErrPoison)
	require.ErrorIs(t, err, serde.ErrRegistryUnavailable)

	e.cluster.Registry().ClearInterceptors()
	s := e.open("", kvstore.OnPoison(kvstore.PoisonSkip))
	require.Zero(t, s.Stats().PoisonSkipped)
	got, ok, err := s.Get(ctx, "old")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "Ada", got.FirstName)
}
