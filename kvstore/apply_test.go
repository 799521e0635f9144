package kvstore

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/compactkv/compactkv/changelog"
)

// TestApplyBatchesKeyOrderMatchesOffsetOrder: applyBatches applies each
// batch's records in key order, the last version of each key only; the
// cache must hold exactly what applying every record in offset order
// leaves, in each partition on its own.
func TestApplyBatchesKeyOrderMatchesOffsetOrder(t *testing.T) {
	s := fzStore(t, PoisonFail)
	val := func(name string) []byte {
		v, err := s.codec.Encode(fzUser{FirstName: name})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	type op struct {
		p   int32
		key string
		val string // "": a tombstone
	}
	cases := []struct {
		name   string
		before []op // applied first, in a poll of their own
		ops    []op // one poll, in offset order per partition
	}{
		{name: "written, deleted, written", ops: []op{
			{0, "a", "a1"}, {0, "a", ""}, {0, "a", "a2"},
		}},
		{name: "written, written, deleted", before: []op{{0, "a", "a0"}}, ops: []op{
			{0, "a", "a1"}, {0, "a", "a2"}, {0, "a", ""},
		}},
		{name: "deleted, written", before: []op{{0, "a", "a0"}}, ops: []op{
			{0, "a", ""}, {0, "a", "a1"},
		}},
		{name: "the same key in two partitions, interleaved", before: []op{{1, "k", "k0"}}, ops: []op{
			{0, "k", "p0-1"}, {1, "k", "p1-1"}, {0, "k", ""}, {1, "k", ""}, {0, "k", "p0-2"}, {1, "z", "z1"},
		}},
		{name: "keys out of order, versions between them", ops: []op{
			{0, "c", "c1"}, {0, "a", "a1"}, {0, "b", "b1"}, {0, "a", ""}, {0, "c", "c2"},
			{0, "b", ""}, {0, "a", "a2"}, {0, "b", "b2"}, {0, "c", ""},
		}},
		{name: "a tombstone of a key never written", ops: []op{{1, "x", ""}, {1, "y", "y1"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.fzReset(t)
			model := [2]map[string]string{{}, {}}
			offs := map[int32]int64{0: 0, 1: 0}
			for _, ops := range [][]op{tc.before, tc.ops} {
				if len(ops) == 0 {
					continue
				}
				var bs [2]changelog.Batch
				for _, o := range ops {
					b := &bs[o.p]
					b.Partition = o.p
					r := changelog.Record{Key: []byte(o.key), Offset: offs[o.p]}
					if o.val != "" {
						r.Value = val(o.val)
						model[o.p][o.key] = string(r.Value)
					} else {
						delete(model[o.p], o.key)
					}
					b.Records = append(b.Records, r)
					offs[o.p]++
					b.Next = offs[o.p]
				}
				var poll []changelog.Batch
				for _, b := range bs {
					if len(b.Records) > 0 {
						poll = append(poll, b)
					}
				}
				if err := s.applyBatches(context.Background(), poll); err != nil {
					t.Fatal(err)
				}
			}
			got, gotOffs := s.fzDump(t)
			for p := range 2 {
				if !maps.Equal(got[p], model[p]) {
					t.Errorf("partition %d: cache %q, want %q", p, got[p], model[p])
				}
			}
			if !maps.Equal(gotOffs, offs) {
				t.Errorf("checkpoint %v, want %v", gotOffs, offs)
			}
		})
	}
}

// TestApplyBatchesRandomPollsMatchAModel: random polls over few keys (many
// versions of each, tombstones among them) in two partitions; after each
// poll the cache equals a model that applies the records one by one in
// offset order.
func TestApplyBatchesRandomPollsMatchAModel(t *testing.T) {
	s := fzStore(t, PoisonFail)
	vals := make([][]byte, 8)
	for i := range vals {
		v, err := s.codec.Encode(fzUser{FirstName: fmt.Sprint("v", i), Age: int32(i)})
		if err != nil {
			t.Fatal(err)
		}
		vals[i] = v
	}
	rng := rand.New(rand.NewPCG(14, 1))
	for round := range 50 {
		s.fzReset(t)
		model := [2]map[string]string{{}, {}}
		offs := map[int32]int64{0: 0, 1: 0}
		for range 1 + rng.IntN(4) {
			var bs [2]changelog.Batch
			for range rng.IntN(200) {
				p := int32(rng.IntN(2))
				key := fmt.Sprint("k", rng.IntN(1+rng.IntN(40)))
				r := changelog.Record{Key: []byte(key), Offset: offs[p]}
				if rng.IntN(3) == 0 {
					delete(model[p], key)
				} else {
					r.Value = vals[rng.IntN(len(vals))]
					model[p][key] = string(r.Value)
				}
				bs[p].Partition = p
				bs[p].Records = append(bs[p].Records, r)
				offs[p]++
				bs[p].Next = offs[p]
			}
			var poll []changelog.Batch
			for _, i := range rng.Perm(2) { // the partitions in either order
				if len(bs[i].Records) > 0 {
					poll = append(poll, bs[i])
				}
			}
			if err := s.applyBatches(context.Background(), poll); err != nil {
				t.Fatal(err)
			}
			got, _ := s.fzDump(t)
			for p := range 2 {
				if !maps.Equal(got[p], model[p]) {
					t.Fatalf("round %d, partition %d: cache %q, want %q", round, p, got[p], model[p])
				}
			}
		}
	}
}

// TestLastPerKey: the last record of each key, in key order.
func TestLastPerKey(t *testing.T) {
	rec := func(k string, off int64) changelog.Record {
		return changelog.Record{Key: []byte(k), Value: []byte(fmt.Sprint(off)), Offset: off}
	}
	in := []changelog.Record{rec("b", 0), rec("a", 1), rec("b", 2), rec("c", 3), rec("a", 4), rec("a", 5), rec("b", 6)}
	var got []string
	for _, r := range lastPerKey(in) {
		got = append(got, fmt.Sprintf("%s@%d", r.Key, r.Offset))
	}
	if want := fmt.Sprint([]string{"a@5", "b@6", "c@3"}); fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %v", got, want)
	}
	if len(lastPerKey(nil)) != 0 || len(lastPerKey(in[:1])) != 1 {
		t.Fatal("short inputs")
	}
}

// BenchmarkLastPerKey orders one poll of 10,000 records of random 16-byte
// keys for the cache file, as applyBatches does, beside the stable sort of
// the records it replaced.
func BenchmarkLastPerKey(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	recs := make([]changelog.Record, 10_000)
	for i := range recs {
		k := make([]byte, 16)
		for j := range k {
			k[j] = byte(rng.Uint32())
		}
		recs[i] = changelog.Record{Key: k, Value: []byte("v"), Offset: int64(i)}
	}
	b.Run("stable-sort", func(b *testing.B) {
		for b.Loop() {
			r := slices.Clone(recs)
			slices.SortStableFunc(r, func(a, b changelog.Record) int { return bytes.Compare(a.Key, b.Key) })
		}
	})
	b.Run("lastPerKey", func(b *testing.B) {
		for b.Loop() {
			lastPerKey(recs)
		}
	})
}

// TestReachedAll: a delta records the time its cache was current in the
// poll that brings the last partition to its end, and in no poll before.
func TestReachedAll(t *testing.T) {
	end := map[int32]int64{0: 10, 1: 5, 2: 0}
	pos := map[int32]int64{0: 4, 1: 5, 2: 0}
	for _, c := range []struct {
		bs   []changelog.Batch
		want bool
	}{
		{nil, false},
		{[]changelog.Batch{{Partition: 0, Next: 9}}, false},
		{[]changelog.Batch{{Partition: 0, Next: 10}}, true},
		{[]changelog.Batch{{Partition: 1, Next: 6}, {Partition: 0, Next: 12}}, true},
		{[]changelog.Batch{{Partition: 1, Next: 20}}, false},
	} {
		if got := reachedAll(pos, c.bs, end); got != c.want {
			t.Errorf("reachedAll(%v, %v, %v) = %v, want %v", pos, c.bs, end, got, c.want)
		}
	}
	if !reachedAll(map[int32]int64{0: 10, 1: 5, 2: 0}, nil, end) {
		t.Error("every partition at its end: reached")
	}
}
