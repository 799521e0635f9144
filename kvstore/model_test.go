package kvstore_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/kvstore"
)

// TestRandomOpsMatchAPlainMap runs seeded random sequences of Put, Delete,
// broker compaction, store restart (Close and Open on the same cache) and
// cache loss (the directory deleted and recreated), and after every step
// compares Get of every key ever touched and a full Scan with a plain map.
// Seeds and steps are fixed, so a failure replays; its message holds the
// script that led to it.
func TestRandomOpsMatchAPlainMap(t *testing.T) {
	cases := []struct {
		seed       uint64
		partitions int32
		retention  string // delete.retention.ms: "0" lets compaction drop tombstones
	}{
		{1, 1, "0"},
		{2, 3, "0"},
		{3, 1, "86400000"},
		{4, 3, "86400000"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("seed=%d/partitions=%d/delete.retention.ms=%s", c.seed, c.partitions, c.retention), func(t *testing.T) {
			e := newEnv(t)
			e.requireKfake("forced compaction")
			ctx := ctxT(t)
			dir := t.TempDir()
			opts := e.opts(dir, kvstore.Partitions(c.partitions), kvstore.TopicConfig("delete.retention.ms", c.retention))
			open := func() *kvstore.Store[User] {
				s, err := kvstore.Open[User](ctx, e.topic, opts...)
				require.NoError(t, err)
				return s
			}
			s := open()
			defer func() { s.Close() }()

			rng := rand.New(rand.NewPCG(c.seed, 99))
			model := map[string]User{}
			touched := map[string]bool{}
			var script []string // what happened, for the failure message
			counts := map[string]int{}
			for step := range 120 {
				k := fmt.Sprintf("key-%02d", rng.IntN(24))
				op := rng.IntN(100)
				switch {
				case op < 55:
					u := User{FirstName: k, LastName: fmt.Sprint("step-", step), Age: rng.Int32N(120)}
					if rng.IntN(2) == 0 {
						u.Email = ptr(k + "@example.com")
					}
					acked(t)(s.Put(ctx, k, u))
					model[k], touched[k] = u, true
					script = append(script, "put "+k)
					counts["put"]++
				case op < 80:
					acked(t)(s.Delete(ctx, k))
					delete(model, k)
					touched[k] = true
					script = append(script, "delete "+k)
					counts["delete"]++
				case op < 84 && c.retention == "0":
					// Compaction that drops tombstones at once, while the
					// store is closed: the retention guard rebuilds the cache
					// on the next Open. (Under the running store, below, the
					// store's own tombstones the follower never got to read
					// reach the cache through its overlay.)
					require.NoError(t, s.Close())
					e.cluster.Kafka().Compact()
					s = open()
					script = append(script, "compact offline ("+s.Stats().Restore.Mode+")")
					counts["compact"]++
				case op < 88:
					e.cluster.Kafka().Compact() // under the running store
					script = append(script, "compact")
					counts["compact"]++
				case op < 95:
					require.NoError(t, s.Close())
					s = open()
					script = append(script, "restart ("+s.Stats().Restore.Mode+")")
					counts["restart"]++
				default:
					require.NoError(t, s.Close())
					require.NoError(t, os.RemoveAll(dir))
					require.NoError(t, os.MkdirAll(dir, 0o755))
					s = open()
					require.Equal(t, "full", s.Stats().Restore.Mode)
					script = append(script, "wipe cache")
					counts["wipe"]++
				}
				for key := range touched {
					got, ok, err := s.Get(ctx, key)
					require.NoError(t, err)
					want, wantOK := model[key]
					require.Equal(t, wantOK, ok, "step %d: Get(%q) presence; script %v", step, key, script)
					require.Equal(t, want, got, "step %d: Get(%q); script %v", step, key, script)
				}
				require.Equal(t, model, contents(t, s), "step %d: Scan; script %v", step, script)
			}
			t.Logf("ops: %v", counts)
		})
	}
}
