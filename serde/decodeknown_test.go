package serde_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

// DecodeKnown decodes only under writer schemas the codec has resolved
// already (it never asks the registry), and then as Decode does.
func TestDecodeKnownDecodesOnlyUnderResolvedWriterSchemas(t *testing.T) {
	ctx := context.Background()
	_, rc := fakeRegistry(t)
	v1, err := serde.New[testdata.UserV1](ctx, rc, "users-value", testdata.UserV1Schema, sr.CompatNone)
	require.NoError(t, err)
	v2, err := serde.New[testdata.User](ctx, rc, "users-value", testdata.UserV2Schema, sr.CompatNone)
	require.NoError(t, err)
	old, err := v1.Encode(testdata.UserV1{FirstName: "Ada", LastName: "Lovelace", Age: 36})
	require.NoError(t, err)

	u := testdata.User{FirstName: "untouched"}
	known, err := v2.DecodeKnown(old, &u)
	require.NoError(t, err)
	require.False(t, known, "writer schema v1 not resolved yet")
	require.Equal(t, testdata.User{FirstName: "untouched"}, u)

	var viaDecode testdata.User
	require.NoError(t, v2.Decode(ctx, old, &viaDecode)) // resolves v1
	u = testdata.User{}
	known, err = v2.DecodeKnown(old, &u)
	require.NoError(t, err)
	require.True(t, known)
	require.Equal(t, viaDecode, u)

	known, err = v2.DecodeKnown([]byte{0, 1}, &u)
	require.True(t, known, "a malformed header needs no registry to be refused")
	require.ErrorIs(t, err, serde.ErrMalformed)
	mine, err := v2.Encode(testdata.User{FirstName: "Ada", LastName: "Lovelace", Age: 36})
	require.NoError(t, err)
	known, err = v2.DecodeKnown(mine[:len(mine)-3], &u)
	require.True(t, known)
	require.ErrorIs(t, err, serde.ErrMalformed, "a truncated body, as Decode")
}

// What DecodeKnown (and Decode) writes into v never points into the bytes
// it decoded: kvstore decodes straight from the cache file's memory map,
// which is unmapped later. hamba/avro copies strings and bytes; this pins
// it, short strings (carved from the reader's slab) and long ones alike.
func TestDecodedValuesDoNotAliasTheirBytes(t *testing.T) {
	ctx := context.Background()
	_, rc := fakeRegistry(t)
	c, err := serde.New[testdata.User](ctx, rc, "users-value", testdata.UserV2Schema, sr.CompatNone)
	require.NoError(t, err)
	email := strings.Repeat("e", 5000) + "@example.com"
	want := testdata.User{FirstName: "Ada", LastName: strings.Repeat("L", 2000), Age: 36, Email: &email}
	b, err := c.Encode(want)
	require.NoError(t, err)
	var u testdata.User
	known, err := c.DecodeKnown(b, &u)
	require.NoError(t, err)
	require.True(t, known)
	for i := range b {
		b[i] = 0xFF
	}
	require.Equal(t, want, u)
}

// The same for every kind a value can hold bytes in: bytes, nullable bytes,
// arrays of strings, maps (keys and values), nested records, enums.
func TestDecodedValuesOfEveryKindDoNotAliasTheirBytes(t *testing.T) {
	ctx := context.Background()
	_, rc := fakeRegistry(t)
	const schema = `{"type":"record","name":"Kinds","fields":[
	 {"name":"b","type":"bytes"},
	 {"name":"nb","type":["null","bytes"]},
	 {"name":"a","type":{"type":"array","items":"string"}},
	 {"name":"m","type":{"type":"map","values":"string"}},
	 {"name":"e","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}},
	 {"name":"r","type":{"type":"record","name":"In","fields":[{"name":"s","type":"string"}]}}]}`
	type in struct {
		S string `avro:"s"`
	}
	type kinds struct {
		B  []byte            `avro:"b"`
		NB *[]byte           `avro:"nb"`
		A  []string          `avro:"a"`
		M  map[string]string `avro:"m"`
		E  string            `avro:"e"`
		R  in                `avro:"r"`
	}
	c, err := serde.New[kinds](ctx, rc, "kinds-value", schema, sr.CompatNone)
	require.NoError(t, err)
	nb := []byte(strings.Repeat("n", 3000))
	want := kinds{B: []byte("short"), NB: &nb, A: []string{"x", strings.Repeat("y", 2000)},
		M: map[string]string{"key": "v", strings.Repeat("K", 1500): strings.Repeat("V", 1500)}, E: "GREEN",
		R: in{S: strings.Repeat("s", 1200)}}
	b, err := c.Encode(want)
	require.NoError(t, err)
	var got kinds
	known, err := c.DecodeKnown(b, &got)
	require.NoError(t, err)
	require.True(t, known)
	for i := range b {
		b[i] = 0xFF
	}
	require.Equal(t, want, got)
}
