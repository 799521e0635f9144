package serde_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/compactkv/compactkv/serde"
)

// holder is a record of one field, n, of Go type T.
type holder[T any] struct {
	N T `avro:"n"`
}

func holderSchema(avroType string) string {
	return fmt.Sprintf(`{"type":"record","name":"H","fields":[{"name":"n","type":%s}]}`, avroType)
}

// newCodec returns a codec of V under its own subject of rc.
func newCodec[V any](t *testing.T, rc *sr.Client, schema string) (*serde.Codec[V], error) {
	t.Helper()
	subject := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()) + "-value"
	return serde.New[V](context.Background(), rc, subject, schema, sr.CompatNone)
}

// roundTrip encodes v and decodes it back.
func roundTrip[V any](t *testing.T, c *serde.Codec[V], v V) V {
	t.Helper()
	b, err := c.Encode(v)
	require.NoError(t, err)
	var got V
	require.NoError(t, c.Decode(context.Background(), b, &got))
	return got
}

// An intCase runs one Go integer type against one Avro type.
type intCase func(t *testing.T, rc *sr.Client, avroType string)

// fit says every value round-trips unchanged.
func fit[T any](vals ...T) intCase {
	return func(t *testing.T, rc *sr.Client, avroType string) {
		c, err := newCodec[holder[T]](t, rc, holderSchema(avroType))
		require.NoError(t, err)
		for _, v := range vals {
			require.Equal(t, v, roundTrip(t, c, holder[T]{N: v}).N, "%v", v)
		}
	}
}

// overflow says every value is refused by Encode, naming the field and the value.
func overflow[T any](vals ...T) intCase {
	return func(t *testing.T, rc *sr.Client, avroType string) {
		c, err := newCodec[holder[T]](t, rc, holderSchema(avroType))
		require.NoError(t, err)
		for _, v := range vals {
			b, err := c.Encode(holder[T]{N: v})
			require.ErrorIs(t, err, serde.ErrInvalidValue, "%v", v)
			require.Nil(t, b)
			require.Contains(t, err.Error(), `field "n"`)
			require.Contains(t, err.Error(), fmt.Sprint(v))
		}
	}
}

// refused says New refuses the Go type, naming the field and both types: no
// value of it could be written and read back whole.
func refused[T any]() intCase {
	return func(t *testing.T, rc *sr.Client, avroType string) {
		_, err := newCodec[holder[T]](t, rc, holderSchema(avroType))
		require.ErrorIs(t, err, serde.ErrTypeMismatch)
		var te *serde.TypeError
		require.ErrorAs(t, err, &te)
		require.Equal(t, "n", te.Field)
		var zero T
		require.Contains(t, err.Error(), fmt.Sprintf(`field "n": Avro %s into Go %T`, avroType[1:len(avroType)-1], zero))
	}
}

func both(cases ...intCase) intCase {
	return func(t *testing.T, rc *sr.Client, avroType string) {
		for _, c := range cases {
			c(t, rc, avroType)
		}
	}
}

// Every Go integer type against Avro int and long, at and past both ends of
// the Avro type's range (and of the Go type's, where it is narrower). A Go
// type that cannot hold every value of the Avro type is refused by New: a
// value read from the topic would be cut. The unsigned types are refused
// because hamba/avro can neither write nor read them (so a uint64 above
// MaxInt64 can never reach an Avro long). What is left is Go int into Avro
// int, and there Encode checks each value.
func TestEncodeRefusesEveryIntegerThatDoesNotFit(t *testing.T) {
	rc := registry(t)
	for _, tc := range []struct {
		goType string
		int    intCase // into Avro int
		long   intCase // into Avro long
	}{
		{"int",
			both(fit[int](math.MinInt32, -1, 0, 1, math.MaxInt32),
				overflow[int](math.MinInt32-1, math.MaxInt32+1, 3_000_000_000, 1<<40, -1<<40, math.MinInt, math.MaxInt)),
			fit[int](math.MinInt, math.MinInt32-1, 0, math.MaxInt32+1, math.MaxInt)},
		{"int8", refused[int8](), refused[int8]()},
		{"int16", refused[int16](), refused[int16]()},
		{"int32", fit[int32](math.MinInt32, 0, math.MaxInt32), refused[int32]()},
		{"int64", refused[int64](), fit[int64](math.MinInt64, 0, math.MaxInt64)},
		{"uint", refused[uint](), refused[uint]()},
		{"uint8", refused[uint8](), refused[uint8]()},
		{"uint16", refused[uint16](), refused[uint16]()},
		{"uint32", refused[uint32](), refused[uint32]()},
		{"uint64", refused[uint64](), refused[uint64]()},
	} {
		t.Run(tc.goType+" into int", func(t *testing.T) { tc.int(t, rc, `"int"`) })
		t.Run(tc.goType+" into long", func(t *testing.T) { tc.long(t, rc, `"long"`) })
	}
}

func TestTheMessageOfAnOutOfRangeValueNamesFieldValueAndRange(t *testing.T) {
	c, err := newCodec[holder[int]](t, registry(t), holderSchema(`"int"`))
	require.NoError(t, err)
	_, err = c.Encode(holder[int]{N: 3_000_000_000})
	require.EqualError(t, err,
		`serde: value does not fit the schema: field "n": 3000000000 does not fit Avro int (-2147483648 to 2147483647)`)
}

// A field is named by its path: records by name, array items by index, map
// values by key, a nullable union by the field that holds it.
func TestAnOutOfRangeValueIsFoundWhereverItIsNested(t *testing.T) {
	c, err := newCodec[profile](t, registry(t), profileSchema)
	require.NoError(t, err)
	good := func() profile {
		return profile{Name: "Ada", Age: 36, Address: address{Street: "Main", Zip: 10001}, Scores: []int{1, 2, 3}}
	}
	require.Equal(t, good(), roundTrip(t, c, good()))

	big := 3_000_000_000
	requireSpoiledFieldsNamed(t, c, good,
		spoiled[profile]{"age", func(p *profile) { p.Age = big }},
		spoiled[profile]{"address.zip", func(p *profile) { p.Address.Zip = -big }},
		spoiled[profile]{"scores[2]", func(p *profile) { p.Scores[2] = big }},
		spoiled[profile]{"rank", func(p *profile) { p.Rank = &big }},
	)
}

// spoiled is a change to a good value that puts an out-of-range value in
// field.
type spoiled[V any] struct {
	field string
	spoil func(*V)
}

// requireSpoiledFieldsNamed requires that Encode refuses good with each
// change made, with ErrInvalidValue naming the changed field.
func requireSpoiledFieldsNamed[V any](t *testing.T, c *serde.Codec[V], good func() V, changes ...spoiled[V]) {
	t.Helper()
	for _, ch := range changes {
		v := good()
		ch.spoil(&v)
		_, err := c.Encode(v)
		require.ErrorIs(t, err, serde.ErrInvalidValue, ch.field)
		require.Contains(t, err.Error(), fmt.Sprintf("field %q", ch.field), ch.field)
	}
}

const kitSchema = `{
  "type": "record", "name": "Kit", "fields": [
    {"name": "count", "type": "int"},
    {"name": "attrs", "type": {"type": "map", "values": "int"}},
    {"name": "extra", "type": ["null", "int", "string"]},
    {"name": "wait", "type": {"type": "int", "logicalType": "time-millis"}},
    {"name": "next", "type": ["null", "Kit"], "default": null}
  ]
}`

type base struct {
	Count int `avro:"count"`
}

// kit has its count from an embedded struct, a map of ints, a union held in
// an any, a duration in milliseconds and itself, nested.
type kit struct {
	base
	Attrs map[string]int `avro:"attrs"`
	Extra any            `avro:"extra"`
	Wait  time.Duration  `avro:"wait"`
	Next  *kit           `avro:"next"`
}

func TestEncodeChecksEmbeddedFieldsMapsInterfacesDurationsAndRecursiveRecords(t *testing.T) {
	c, err := newCodec[kit](t, registry(t), kitSchema)
	require.NoError(t, err)
	good := func() kit {
		return kit{base: base{Count: 1}, Attrs: map[string]int{"a": 1}, Extra: 5, Wait: 24 * time.Hour,
			Next: &kit{Attrs: map[string]int{}, Next: &kit{Attrs: map[string]int{}, Extra: "x"}}}
	}
	require.Equal(t, good(), roundTrip(t, c, good()))

	big := 3_000_000_000
	requireSpoiledFieldsNamed(t, c, good,
		spoiled[kit]{"count", func(k *kit) { k.Count = big }},
		spoiled[kit]{"attrs[a]", func(k *kit) { k.Attrs["a"] = big }},
		spoiled[kit]{"extra", func(k *kit) { k.Extra = big }},
		spoiled[kit]{"extra", func(k *kit) { k.Extra = map[string]any{"int": big} }},
		spoiled[kit]{"wait", func(k *kit) { k.Wait = 25 * 24 * time.Hour }}, // beyond MaxInt32 ms, about 24.8 days
		spoiled[kit]{"next.next.count", func(k *kit) { k.Next.Next.Count = -big }},
	)

	// A pointer to the struct is checked the same way.
	pc, err := newCodec[*kit](t, registry(t), kitSchema)
	require.NoError(t, err)
	k := good()
	k.Count = big
	_, err = pc.Encode(&k)
	require.ErrorIs(t, err, serde.ErrInvalidValue)
	require.Contains(t, err.Error(), `field "count"`)
}

// A V that is not a struct is not held to the schema at New, but its ints
// are still checked when they are encoded.
func TestEncodeChecksTheIntsOfAMapValue(t *testing.T) {
	c, err := newCodec[map[string]any](t, registry(t), profileSchema)
	require.NoError(t, err)
	v := map[string]any{"name": "Ada", "age": 36, "address": map[string]any{"street": "Main", "zip": 10001},
		"scores": []any{1, 2}, "rank": nil}
	_, err = c.Encode(v)
	require.NoError(t, err)

	v["address"] = map[string]any{"street": "Main", "zip": 1 << 40}
	_, err = c.Encode(v)
	require.ErrorIs(t, err, serde.ErrInvalidValue)
	require.Contains(t, err.Error(), `field "address.zip"`)

	v["address"] = map[string]any{"street": "Main", "zip": 1}
	v["scores"] = []any{1, math.MaxInt32 + 1}
	_, err = c.Encode(v)
	require.ErrorIs(t, err, serde.ErrInvalidValue)
	require.Contains(t, err.Error(), `field "scores[1]"`)

	ic, err := newCodec[int](t, registry(t), `"int"`)
	require.NoError(t, err)
	_, err = ic.Encode(math.MinInt32 - 1)
	require.ErrorIs(t, err, serde.ErrInvalidValue)
}

// hamba/avro writes an Avro float only from a float32 and reads it only
// into one, so a float64 field for it is refused at New, and float32 keeps
// every value, NaN and the infinities included.
func TestFloatsKeepTheirValue(t *testing.T) {
	rc := registry(t)
	_, err := newCodec[holder[float64]](t, rc, holderSchema(`"float"`))
	require.ErrorIs(t, err, serde.ErrTypeMismatch)
	require.ErrorContains(t, err, `field "n": Avro float into Go float64 (use float32)`)

	c, err := newCodec[holder[float32]](t, rc, holderSchema(`"float"`))
	require.NoError(t, err)
	for _, f := range []float32{0, -1.5, math.MaxFloat32, math.SmallestNonzeroFloat32, float32(math.Inf(1)), float32(math.Inf(-1))} {
		require.Equal(t, f, roundTrip(t, c, holder[float32]{N: f}).N)
	}
	require.True(t, math.IsNaN(float64(roundTrip(t, c, holder[float32]{N: float32(math.NaN())}).N)))

	d, err := newCodec[holder[float64]](t, rc, holderSchema(`"double"`))
	require.NoError(t, err)
	require.Equal(t, math.MaxFloat64, roundTrip(t, d, holder[float64]{N: math.MaxFloat64}).N)
	_, err = newCodec[holder[float32]](t, rc, holderSchema(`"double"`))
	require.ErrorIs(t, err, serde.ErrTypeMismatch)
}

// FuzzEncodeInt: a Go int into an Avro int either is refused, exactly when
// it is out of int32's range, or comes back unchanged.
func FuzzEncodeInt(f *testing.F) {
	for _, n := range []int64{0, math.MaxInt32, math.MinInt32, math.MaxInt32 + 1, math.MinInt32 - 1, 3_000_000_000, 1 << 40, math.MaxInt64, math.MinInt64} {
		f.Add(n)
	}
	rc := registry(f)
	c, err := serde.New[holder[int]](context.Background(), rc, "fuzz-value", holderSchema(`"int"`), sr.CompatNone)
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, n int64) {
		b, err := c.Encode(holder[int]{N: int(n)})
		if n < math.MinInt32 || n > math.MaxInt32 {
			require.ErrorIs(t, err, serde.ErrInvalidValue)
			return
		}
		require.NoError(t, err)
		var got holder[int]
		require.NoError(t, c.Decode(context.Background(), b, &got))
		require.Equal(t, int(n), got.N)
	})
}
