package kvstore

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// The sorter must give the same answer whether it spills or not: the last
// version of each (partition, key), tombstoned keys left out, in order.
func TestSorterKeepsTheLastVersionAcrossSpilledRuns(t *testing.T) {
	for _, limit := range []int{1 << 30, 4 << 10} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			srt := newSorter(limit, t.TempDir(), "t")
			type pk struct {
				p int32
				k string
			}
			model := map[pk]string{}
			for i := range 20000 {
				p, k := rng.Int32N(3), fmt.Sprintf("k%04d", rng.IntN(500))
				if rng.IntN(5) == 0 {
					require.NoError(t, srt.add(p, []byte(k), nil))
					delete(model, pk{p, k})
					continue
				}
				v := fmt.Sprintf("v%d", i)
				require.NoError(t, srt.add(p, []byte(k), []byte(v)))
				model[pk{p, k}] = v
			}
			if limit < 1<<20 {
				require.NotEmpty(t, srt.runs, "small limit must spill")
			}
			got := map[pk]string{}
			var last pk
			first := true
			require.NoError(t, srt.each(func(p int32, k, v []byte) error {
				cur := pk{p, string(k)}
				if !first {
					require.True(t, last.p < cur.p || (last.p == cur.p && last.k < cur.k), "order %v then %v", last, cur)
				}
				first, last = false, cur
				got[cur] = string(v)
				return nil
			}))
			require.Equal(t, model, got)
		})
	}
}
