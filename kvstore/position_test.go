package kvstore_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/kvstore"
)

// token builds a position token from its parts: version, 8 topic ID bytes,
// then the partition count and (partition, next offset) pairs as uvarints.
func token(version byte, pairs ...uint64) string {
	b := append([]byte{version}, 1, 2, 3, 4, 5, 6, 7, 8)
	for _, v := range pairs {
		b = binary.AppendUvarint(b, v)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Tokens read back as what was written, merge per partition to the later
// offset, and anything that is not a token is refused with ErrBadPosition.
func TestPositionTokensRoundTripMergeAndRefuseGarbage(t *testing.T) {
	a, err := kvstore.ParsePosition(token(1, 2, 0, 10, 3, 7))
	require.NoError(t, err)
	require.Equal(t, map[int32]int64{0: 10, 3: 7}, a.Offsets())
	require.Equal(t, token(1, 2, 0, 10, 3, 7), a.String())
	text, err := a.MarshalText()
	require.NoError(t, err)
	var back kvstore.Position
	require.NoError(t, back.UnmarshalText(text))
	require.True(t, a.Equal(back))
	require.False(t, a.Equal(kvstore.Position{}))

	b, err := kvstore.ParsePosition(token(1, 2, 1, 5, 3, 9))
	require.NoError(t, err)
	m, err := a.Merge(b)
	require.NoError(t, err)
	require.Equal(t, map[int32]int64{0: 10, 1: 5, 3: 9}, m.Offsets())
	m2, err := b.Merge(a)
	require.NoError(t, err)
	require.Equal(t, m.String(), m2.String(), "merge is symmetric")
	same, err := m.Merge(kvstore.Position{})
	require.NoError(t, err)
	require.Equal(t, m, same)

	zero, err := kvstore.ParsePosition("")
	require.NoError(t, err)
	require.True(t, zero.IsZero())
	require.Empty(t, zero.String())

	for name, s := range map[string]string{
		"not base64":           "%%%",
		"padded base64":        token(1, 1, 0, 1) + "=",
		"another version":      token(2, 1, 0, 1),
		"no partitions":        token(1, 0),
		"truncated":            token(1, 2, 0, 10),
		"trailing bytes":       token(1, 1, 0, 10, 99),
		"partitions unordered": token(1, 2, 3, 1, 0, 1),
		"a partition twice":    token(1, 2, 3, 1, 3, 2),
		"partition too large":  token(1, 1, 1<<31, 1),
		"offset too large":     token(1, 1, 0, 1<<63),
		"too short":            base64.RawURLEncoding.EncodeToString([]byte{1, 2}),
		"too long":             strings.Repeat("A", 5000),
	} {
		_, err := kvstore.ParsePosition(s)
		require.ErrorIs(t, err, kvstore.ErrBadPosition, name)
	}
}

// A write with a context that has already ended produces nothing.
func TestAWriteWithAnEndedContextProducesNothing(t *testing.T) {
	e := newEnv(t)
	s := e.open("")
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	before := e.endOffsets()
	require.ErrorIs(t, errOf(s.Put(ctx, "k", User{FirstName: "never"})), context.Canceled)
	require.ErrorIs(t, errOf(s.Delete(ctx, "k")), context.Canceled)
	require.Equal(t, before, e.endOffsets())
	_, ok, err := s.Get(ctxT(t), "k")
	require.NoError(t, err)
	require.False(t, ok)
}
