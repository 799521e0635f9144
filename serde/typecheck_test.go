package serde_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

type ageAsString struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Age       string  `avro:"age"`
	Email     *string `avro:"email"`
}

func TestNewRefusesAGoTypeThatCannotHoldTheSchemaNamingFieldAndTypes(t *testing.T) {
	rc := registry(t)
	_, err := serde.New[ageAsString](context.Background(), rc, "users-value", testdata.UserV2Schema, sr.CompatNone)
	require.ErrorIs(t, err, serde.ErrTypeMismatch)
	require.EqualError(t, err,
		`serde: Go type serde_test.ageAsString cannot hold the schema: field "age": Avro int into Go string (use int32 or int)`)
	vs, _ := rc.SubjectVersions(context.Background(), "users-value")
	require.Empty(t, vs, "nothing is registered for a type that cannot hold the schema")

	_, err = serde.New[*ageAsString](context.Background(), rc, "users-value", testdata.UserV2Schema, sr.CompatNone)
	require.ErrorIs(t, err, serde.ErrTypeMismatch)
	require.ErrorContains(t, err, `Go type *serde_test.ageAsString cannot hold the schema: field "age"`)
}

type withNickname struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Age       int32   `avro:"age"`
	Email     *string `avro:"email"`
	Nickname  string
}

type withSkippedNickname struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Age       int32   `avro:"age"`
	Email     *string `avro:"email"`
	Nickname  string  `avro:"-"`
	private   int     //nolint:unused // unexported fields are never Avro's
}

// An exported field the schema lacks would be dropped without a word on
// every write; it must be left out on purpose, with avro:"-".
func TestAnExportedFieldTheSchemaLacksIsRefusedUnlessTaggedOut(t *testing.T) {
	_, err := newCodec[withNickname](t, registry(t), testdata.UserV2Schema)
	require.ErrorIs(t, err, serde.ErrTypeMismatch)
	require.EqualError(t, err, `serde: Go type serde_test.withNickname does not match the schema: `+
		`field "Nickname": Go field Nickname is not in the schema (tag it avro:"-" to leave it out)`)

	c, err := newCodec[withSkippedNickname](t, registry(t), testdata.UserV2Schema)
	require.NoError(t, err)
	got := roundTrip(t, c, withSkippedNickname{FirstName: "Ada", Age: 36, Nickname: "countess", private: 1})
	require.Equal(t, withSkippedNickname{FirstName: "Ada", Age: 36}, got, "avro:\"-\" is neither written nor read")
}

// A schema field with a default needs no Go field: it is written as its
// default and skipped when read.
func TestASchemaFieldWithADefaultNeedsNoGoField(t *testing.T) {
	c, err := newCodec[testdata.UserV1](t, registry(t), testdata.UserV2Schema)
	require.NoError(t, err)
	require.Equal(t, testdata.UserV1{FirstName: "Ada", Age: 36}, roundTrip(t, c, testdata.UserV1{FirstName: "Ada", Age: 36}))

	_, err = newCodec[struct {
		FirstName string `avro:"first_name"`
		LastName  string `avro:"last_name"`
	}](t, registry(t), testdata.UserV2Schema)
	require.ErrorIs(t, err, serde.ErrTypeMismatch)
	require.ErrorContains(t, err, `field "age": Avro int has no default and Go type`)
	require.ErrorContains(t, err, `has no field for it (tag one avro:"age")`)
}

const everythingSchema = `{
  "type": "record", "name": "All", "namespace": "t", "fields": [
    {"name": "b", "type": "boolean"},
    {"name": "i", "type": "int"},
    {"name": "l", "type": "long"},
    {"name": "f", "type": "float"},
    {"name": "d", "type": "double"},
    {"name": "s", "type": "string"},
    {"name": "raw", "type": "bytes"},
    {"name": "md5", "type": {"type": "fixed", "name": "MD5", "size": 16}},
    {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "counts", "type": {"type": "map", "values": "long"}},
    {"name": "maybe", "type": ["null", "string"]},
    {"name": "either", "type": ["int", "string"]},
    {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "took", "type": {"type": "long", "logicalType": "time-micros"}},
    {"name": "home", "type": {"type": "record", "name": "Place", "fields": [
      {"name": "city", "type": "string"}
    ]}},
    {"name": "places", "type": {"type": "array", "items": "Place"}}
  ]
}`

type place struct {
	City string `avro:"city"`
}

// every is a Go type for each kind of Avro type.
type every struct {
	B      bool             `avro:"b"`
	I      int32            `avro:"i"`
	L      int64            `avro:"l"`
	F      float32          `avro:"f"`
	D      float64          `avro:"d"`
	S      string           `avro:"s"`
	Raw    []byte           `avro:"raw"`
	MD5    [16]byte         `avro:"md5"`
	Color  string           `avro:"color"`
	Tags   []string         `avro:"tags"`
	Counts map[string]int64 `avro:"counts"`
	Maybe  *string          `avro:"maybe"`
	Either any              `avro:"either"`
	When   time.Time        `avro:"when"`
	Day    time.Time        `avro:"day"`
	Took   time.Duration    `avro:"took"`
	Home   place            `avro:"home"`
	Places []*place         `avro:"places"`
}

func TestEveryAvroTypeHasAGoTypeThatHoldsIt(t *testing.T) {
	c, err := newCodec[every](t, registry(t), everythingSchema)
	require.NoError(t, err)
	s := "x"
	v := every{B: true, I: -1, L: 1 << 40, F: 1.5, D: 2.5, S: "s", Raw: []byte{1}, MD5: [16]byte{1, 2},
		Color: "GREEN", Tags: []string{"a"}, Counts: map[string]int64{"a": 1}, Maybe: &s, Either: "y",
		When: time.UnixMilli(1_700_000_000_123).UTC(), Day: time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC),
		Took: 1500 * time.Microsecond, Home: place{City: "Oslo"}, Places: []*place{{City: "Rome"}}}
	require.Equal(t, v, roundTrip(t, c, v))
}

// Each field of every, swapped for a Go type that cannot hold its Avro type,
// is named with both types.
func TestEveryWrongGoTypeIsNamedWithBothTypes(t *testing.T) {
	for _, tc := range []struct {
		name string
		new  func() error
		want string
	}{
		{"bool", func() error { return mismatched[holder[int32]](t, `"boolean"`) }, `Avro boolean into Go int32`},
		{"int8", func() error { return mismatched[holder[int8]](t, `"int"`) }, `int8 cannot hold every Avro int`},
		{"int32 long", func() error { return mismatched[holder[int32]](t, `"long"`) }, `int32 cannot hold every Avro long`},
		{"int64 time-millis", func() error {
			return mismatched[holder[int64]](t, `{"type":"int","logicalType":"time-millis"}`)
		}, `Avro int (time-millis) into Go int64 (use time.Duration`},
		{"string", func() error { return mismatched[holder[[]byte]](t, `"string"`) }, `Avro string into Go []uint8`},
		{"bytes", func() error { return mismatched[holder[string]](t, `"bytes"`) }, `Avro bytes into Go string`},
		{"fixed size", func() error {
			return mismatched[holder[[8]byte]](t, `{"type":"fixed","name":"MD5","size":16}`)
		}, `Avro fixed MD5 (16 bytes) into Go [8]uint8 (use [16]byte)`},
		{"enum", func() error {
			return mismatched[holder[int]](t, `{"type":"enum","name":"C","symbols":["A"]}`)
		}, `Avro enum C into Go int`},
		{"array", func() error {
			return mismatched[holder[[]int64]](t, `{"type":"array","items":"string"}`)
		}, `field "n[]": Avro string into Go int64`},
		{"map", func() error {
			return mismatched[holder[map[string]string]](t, `{"type":"map","values":"long"}`)
		}, `field "n[]": Avro long into Go string`},
		{"nullable", func() error { return mismatched[holder[int32]](t, `["null","int"]`) }, `Avro union [null, int] into Go int32 (use *int32)`},
		{"union", func() error { return mismatched[holder[*int32]](t, `["int","string"]`) }, `(use map[string]any or any)`},
		{"record", func() error { return mismatched[holder[string]](t, everythingSchema) }, `Avro record t.All into Go string`},
		{"nested", func() error {
			type wrongPlace struct {
				City int32 `avro:"city"`
			}
			return mismatched[holder[wrongPlace]](t, `{"type":"record","name":"Place","fields":[{"name":"city","type":"string"}]}`)
		}, `field "n.city": Avro string into Go int32`},
		{"timestamp", func() error {
			return mismatched[holder[time.Duration]](t, `{"type":"long","logicalType":"timestamp-millis"}`)
		}, `Avro long (timestamp-millis) into Go time.Duration (use time.Time)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.new()
			require.ErrorIs(t, err, serde.ErrTypeMismatch)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func mismatched[V any](t *testing.T, avroType string) error {
	_, err := newCodec[V](t, registry(t), holderSchema(avroType))
	return err
}

// V that is not a struct goes to hamba/avro unchecked, as before.
func TestAMapOrAnyValueTypeIsNotCheckedAtNew(t *testing.T) {
	_, err := newCodec[map[string]any](t, registry(t), testdata.UserV2Schema)
	require.NoError(t, err)
	_, err = newCodec[any](t, registry(t), testdata.UserV2Schema)
	require.NoError(t, err)
}

type Named struct {
	Name string `avro:"name"`
}

type Counted struct {
	Count int `avro:"count"`
}

// embedding promotes the fields of a struct embedded by value and of one
// embedded by pointer, as hamba/avro does.
type embedding struct {
	Named
	*Counted
}

func TestFieldsOfEmbeddedStructsCountAndAreChecked(t *testing.T) {
	c, err := newCodec[embedding](t, registry(t),
		`{"type":"record","name":"E","fields":[{"name":"name","type":"string"},{"name":"count","type":"int"}]}`)
	require.NoError(t, err)
	v := embedding{Named: Named{Name: "a"}, Counted: &Counted{Count: 7}}
	require.Equal(t, v, roundTrip(t, c, v))

	v.Count = 1 << 40
	_, err = c.Encode(v)
	require.ErrorIs(t, err, serde.ErrInvalidValue)
	require.ErrorContains(t, err, `field "count"`)

	_, err = c.Encode(embedding{Named: Named{Name: "a"}}) // nil *Counted
	require.ErrorIs(t, err, serde.ErrInvalidValue)

	// A field of the same Avro name deeper down is hidden, and refused.
	type hiding struct {
		Named
		Title string `avro:"name"`
	}
	_, err = newCodec[hiding](t, registry(t), `{"type":"record","name":"E","fields":[{"name":"name","type":"string"}]}`)
	require.ErrorIs(t, err, serde.ErrTypeMismatch)
	require.ErrorContains(t, err, `field "name": Go field Named.Name is hidden by Go field Title of the same Avro name`)
}
