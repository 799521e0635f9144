package kvstore

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/changelog"
)

// An own write that the follower passes without reading it (compaction
// removed it first) must be handed back for the cache file; one it read, or
// read something newer of, must not.
func TestAReplicaHandsBackOwnWritesTheFollowerPassedUnseen(t *testing.T) {
	r := newReplica(0)
	r.reset(10)
	r.putOwn("deleted-then-compacted", 11, nil)
	r.putOwn("read", 12, []byte("v12"))
	r.putOwn("newer-read", 13, []byte("v13"))
	r.putOwn("not-yet-passed", 20, []byte("v20"))
	r.putOwn("already-in-the-file", 9, []byte("v9")) // below the checkpoint: dropped

	b := changelog.Batch{
		Partition: 0,
		Next:      15,
		Records: []changelog.Record{
			{Key: []byte("read"), Offset: 12, Value: []byte("v12")},
			{Key: []byte("newer-read"), Offset: 14, Value: []byte("v14")},
			{Key: []byte("deleted-then-compacted"), Offset: 9}, // older than the own write
		},
	}
	got := r.unseen(&b)
	require.Equal(t, []ownWrite{{key: "deleted-then-compacted", offset: 11}}, got)

	late := r.advance(&b, got)
	require.Empty(t, late, "what the commit wrote is not late")
	_, ok := r.getOwn("not-yet-passed")
	require.True(t, ok)
	for _, k := range []string{"read", "newer-read", "deleted-then-compacted", "already-in-the-file"} {
		_, ok = r.getOwn(k)
		require.False(t, ok, k)
	}
	select {
	case <-r.drained():
		t.Fatal("not drained while an own write waits")
	default:
	}
	r.reset(21)
	select {
	case <-r.drained():
	default:
		t.Fatal("drained once every own write is in the file")
	}
}

// State changes reach the listener in the order they happened, even when
// two goroutines change one partition at once, and the listener may read
// the replicas while it is told.
func TestStateChangesAreToldInOrder(t *testing.T) {
	var rs *replicas
	var told []StateChange
	rs = newReplicas(1, func(c StateChange) {
		_ = rs.snapshot() // reading the state from the listener must not deadlock
		told = append(told, c)
	})
	rs.setAll(PartitionFollowing, nil)
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				if g == 0 {
					rs.stallAll(errors.New("probe"))
				} else {
					rs.recover(stallProbe)
				}
			}
		}()
	}
	wg.Wait()
	require.NotEmpty(t, told)
	for i := 1; i < len(told); i++ {
		require.Equal(t, told[i-1].To, told[i].From, "change %d follows change %d", i, i-1)
	}
	require.Equal(t, rs.snapshot()[0].State, told[len(told)-1].To, "the last change told is the state")
}

// Stats encode readably: states and guards by name.
func TestStatsEncodeStatesAndGuardsByName(t *testing.T) {
	b, err := json.Marshal(Stats{
		Partitions: []PartitionStats{{State: PartitionStalled}},
		Guards:     map[Guard]int64{GuardNoCache: 1},
	})
	require.NoError(t, err)
	require.Contains(t, string(b), `"State":"stalled"`)
	require.Contains(t, string(b), `"Guards":{"no-cache":1}`)
	require.Contains(t, string(b), `"Err":null`)

	b, err = json.Marshal(PartitionStats{State: PartitionStopped, Err: errors.New("poison at 7")})
	require.NoError(t, err)
	require.Contains(t, string(b), `"Err":"poison at 7"`)
	require.Contains(t, string(b), `"State":"stopped"`)
}
