package kvstore

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/changelog"
)

// Records handed to the sorter in polls' batches, on its own goroutine,
// come out as if added one by one in offset order: the last version of each
// key per partition, tombstoned keys left out, across spilled runs.
func TestTheSorterFedInBatchesKeepsTheLastVersionOfEachKey(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	srt := newSorter(64<<10, t.TempDir(), "t") // spills many runs
	defer srt.cleanup()
	type pk struct {
		p int32
		k string
	}
	model := map[pk]string{}
	for poll := range 400 {
		var bs []changelog.Batch
		for p := range int32(3) {
			b := changelog.Batch{Partition: p}
			for i := range rng.IntN(40) {
				k := fmt.Sprintf("k%04d", rng.IntN(500))
				var v []byte
				if rng.IntN(5) > 0 {
					v = []byte(fmt.Sprintf("v%d-%d", poll, i))
					model[pk{p, k}] = string(v)
				} else {
					delete(model, pk{p, k})
				}
				b.Records = append(b.Records, changelog.Record{Key: []byte(k), Value: v})
			}
			bs = append(bs, b)
		}
		require.NoError(t, srt.addBatches(bs))
	}
	require.NoError(t, srt.drain())
	require.Greater(t, srt.srt.Runs(), 1, "the test should spill runs")
	got := map[pk]string{}
	require.NoError(t, srt.srt.Each(func(p int32, k, v []byte) error {
		got[pk{p, string(k)}] = string(v)
		return nil
	}))
	require.Equal(t, model, got)
}

// A spill that fails on the sorter's goroutine is reported by a later
// addBatches or by drain, never lost.
func TestTheSorterFedInBatchesReportsAFailedSpill(t *testing.T) {
	srt := newSorter(0, filepath.Join(t.TempDir(), "missing"), "t") // spills at every add, into a missing directory
	defer srt.cleanup()
	b := []changelog.Batch{{Partition: 0, Records: []changelog.Record{{Key: []byte("k"), Value: []byte("v")}}}}
	var err error
	for range 10 {
		if err = srt.addBatches(b); err != nil {
			break
		}
	}
	if err == nil {
		err = srt.drain()
	}
	require.ErrorContains(t, err, "spill run")
	require.Equal(t, err, srt.drain(), "drain reports the same error again")
}
