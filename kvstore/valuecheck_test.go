package kvstore_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

// userIntAge is User with a Go int for the Avro int age: it holds every Avro
// int, but not every Go int fits one.
type userIntAge struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Age       int     `avro:"age"`
	Email     *string `avro:"email"`
}

// userAgeString has a typo of a type: a string age where the schema says int.
type userAgeString struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Age       string  `avro:"age"`
	Email     *string `avro:"email"`
}

// userWithNickname has a field the schema lacks.
type userWithNickname struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Age       int32   `avro:"age"`
	Email     *string `avro:"email"`
	Nickname  string  `avro:"nickname"`
}

// userSkippingNickname leaves that field out on purpose.
type userSkippingNickname struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Age       int32   `avro:"age"`
	Email     *string `avro:"email"`
	Nickname  string  `avro:"-"`
}

func TestAValueThatDoesNotFitIsRefusedAndNothingIsProduced(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	s, err := kvstore.Open[userIntAge](ctx, e.topic, e.opts("")...)
	require.NoError(t, err)
	defer s.Close()
	before := e.endOffsets()

	for _, age := range []int{3_000_000_000, 1 << 40, math.MaxInt32 + 1, math.MinInt32 - 1} {
		_, err := s.Put(ctx, "ada", userIntAge{FirstName: "Ada", LastName: "Lovelace", Age: age})
		require.ErrorIs(t, err, kvstore.ErrInvalidValue, "age %d", age)
		require.Contains(t, err.Error(), `field "age"`)
	}
	require.Equal(t, before, e.endOffsets(), "the topic's end offset did not move")
	_, ok, err := s.Get(ctx, "ada")
	require.NoError(t, err)
	require.False(t, ok)

	for _, age := range []int{math.MaxInt32, math.MinInt32} {
		acked(t)(s.Put(ctx, "ada", userIntAge{FirstName: "Ada", LastName: "Lovelace", Age: age}))
		got, ok, err := s.Get(ctx, "ada")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, age, got.Age, "the edges of the range are stored whole")
	}
}

// A Go type that cannot hold the schema fails Open before any restore, with
// an error naming the field and both types: never a poison record, and
// never skipped records.
func TestOpenRefusesAGoTypeThatCannotHoldTheSchemaBeforeItRestores(t *testing.T) {
	check := func(t *testing.T, err error) {
		t.Helper()
		require.ErrorIs(t, err, serde.ErrTypeMismatch)
		require.NotErrorIs(t, err, kvstore.ErrPoison)
		require.Contains(t, err.Error(), `Go type kvstore_test.userAgeString cannot hold the schema: field "age": Avro int into Go string`)
	}
	t.Run("empty topic", func(t *testing.T) {
		e := newEnv(t)
		_, err := kvstore.Open[userAgeString](ctxT(t), e.topic, e.opts("")...)
		check(t, err)
	})
	t.Run("topic with good records", func(t *testing.T) {
		e := newEnv(t)
		w := e.open("")
		acked(t)(w.Put(ctxT(t), "ada", User{FirstName: "Ada", LastName: "Lovelace", Age: 36}))
		_, err := kvstore.Open[userAgeString](ctxT(t), e.topic, e.opts("")...)
		check(t, err)
		_, err = kvstore.Open[userAgeString](ctxT(t), e.topic, e.opts("", kvstore.OnPoison(kvstore.PoisonSkip))...)
		check(t, err)
	})
}

// An exported field the schema does not have would be dropped on every
// write; Open refuses it unless it is tagged avro:"-".
func TestOpenRefusesAFieldTheSchemaLacksUnlessTaggedOut(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	w := e.open("")
	acked(t)(w.Put(ctx, "ada", User{FirstName: "Ada", LastName: "Lovelace", Age: 36}))

	_, err := kvstore.Open[userWithNickname](ctx, e.topic, e.opts("")...)
	require.ErrorIs(t, err, serde.ErrTypeMismatch)
	require.Contains(t, err.Error(), `field "nickname": Go field Nickname is not in the schema (tag it avro:"-" to leave it out)`)

	s, err := kvstore.Open[userSkippingNickname](ctx, e.topic, e.opts("")...)
	require.NoError(t, err)
	defer s.Close()
	got, ok, err := s.Get(ctx, "ada")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, userSkippingNickname{FirstName: "Ada", LastName: "Lovelace", Age: 36}, got)
	acked(t)(s.Put(ctx, "grace", userSkippingNickname{FirstName: "Grace", Nickname: "amazing"}))
	got, ok, err = s.Get(ctx, "grace")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, userSkippingNickname{FirstName: "Grace"}, got, "the tagged-out field is not stored")
}

// The default is FULL_TRANSITIVE: during a rolling deploy old instances read
// what new ones write, so a version that drops a required field is refused.
func TestTheDefaultCompatibilityRefusesASchemaThatDropsARequiredField(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	e.open("") // registers v2

	_, err := kvstore.Open[testdata.UserNoAge](ctx, e.topic, e.opts("", kvstore.ValueSchema(testdata.UserNoAgeSchema))...)
	require.ErrorIs(t, err, kvstore.ErrIncompatibleSchema)
	require.Contains(t, err.Error(), "reader field age has no default and the new schema lacks it")
	require.Len(t, e.schemaVersions(serde.SubjectFor(e.topic)), 1, "nothing more registered")

	// BACKWARD, the old default, lets it through.
	s, err := kvstore.Open[testdata.UserNoAge](ctx, e.topic, e.opts("", kvstore.ValueSchema(testdata.UserNoAgeSchema),
		kvstore.SchemaCompatibility(sr.CompatBackward))...)
	require.NoError(t, err)
	require.NoError(t, s.Close())
}
