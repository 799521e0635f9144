package kvstore_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/kvstore"
)

// Get decodes a value from the cache file's memory map, while its read
// snapshot holds the map: what it returns must not point into the map. The
// values stay whole after the file is replaced (a rebuild) and after the
// store is closed, both of which unmap it; a string left pointing into it
// would fault when compared here.
func TestAValueGetReturnedOutlivesTheCacheFile(t *testing.T) {
	e := newEnv(t)
	s := e.open("")
	ctx := ctxT(t)
	want := map[string]User{}
	var last kvstore.Position
	for i := range 50 {
		k := fmt.Sprintf("user-%03d", i)
		want[k] = User{FirstName: strings.Repeat("f", 10*i) + fmt.Sprint(i), LastName: fmt.Sprint("last-", i),
			Age: int32(i), Email: ptr(fmt.Sprintf("u%d@example.com", i))}
		last = acked(t)(s.Put(ctx, k, want[k]))
	}
	require.NoError(t, s.WaitFor(ctx, last)) // in the file now, not only in the overlay of own writes
	got := map[string]User{}
	for k := range want {
		u, ok, err := s.Get(ctx, k)
		require.NoError(t, err)
		require.True(t, ok, k)
		got[k] = u
	}

	kvstore.MarkDamaged(s) // the follower rebuilds the file and closes the old one
	require.Eventually(t, func() bool {
		return s.Stats().Restore.Reason == "a read met a damaged cache file"
	}, 20*time.Second, 5*time.Millisecond)
	require.Equal(t, want, got)
	for k := range want { // read again, from the new file
		u, ok, err := s.Get(ctx, k)
		require.NoError(t, err)
		require.True(t, ok, k)
		got[k] = u
	}

	require.NoError(t, s.Close())
	require.Equal(t, want, got)
}
