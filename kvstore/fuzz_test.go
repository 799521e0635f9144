package kvstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/changelog"
	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

// fzUser is the value type of the fuzzed store.
type fzUser = testdata.User

var fzCodec = sync.OnceValues(func() (*serde.Codec[fzUser], error) {
	srv := httptest.NewServer(srfake.NewRegistry().Handler()) // lives as long as the test process
	rc, err := sr.NewClient(sr.URLs(srv.URL))
	if err != nil {
		return nil, err
	}
	return serde.New[fzUser](context.Background(), rc, "fuzz-value", testdata.UserV2Schema, sr.CompatBackward)
})

// fzStore is a Store with a cache file and a codec but no broker: enough to
// drive the applier (screen + applyBatches) directly.
func fzStore(tb testing.TB, policy PoisonPolicy) *Store[fzUser] {
	tb.Helper()
	codec, err := fzCodec()
	if err != nil {
		tb.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.poison = policy
	s := &Store[fzUser]{cfg: cfg, topic: "fuzz", codec: codec, part: cfg.partitioner.hasher(),
		info: changelog.TopicInfo{Name: "fuzz", Partitions: 2},
		log:  slog.New(slog.NewTextHandler(io.Discard, nil))}
	s.reps = newReplicas(s.info.Partitions, nil)
	s.db, err = openBolt(filepath.Join(tb.TempDir(), "fuzz.db"), time.Second, true)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.db.Close() })
	return s
}

// reset empties the cache and writes a fresh checkpoint at offset 0.
func (s *Store[V]) fzReset(tb testing.TB) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, r := range s.reps.all {
			if tx.Bucket(r.bucket) != nil {
				if err := tx.DeleteBucket(r.bucket); err != nil {
					return err
				}
			}
		}
		return writeMeta(tx, s.topic, s.info.ID, s.info.Partitions, map[int32]int64{0: 0, 1: 0}, time.Now())
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// fzDump returns the cache's partitions and checkpoint.
func (s *Store[V]) fzDump(tb testing.TB) ([2]map[string]string, map[int32]int64) {
	var out [2]map[string]string
	err := s.db.View(func(tx *bolt.Tx) error {
		for p, r := range s.reps.all {
			out[p] = map[string]string{}
			if err := tx.Bucket(r.bucket).ForEach(func(k, v []byte) error {
				out[p][string(k)] = string(v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	m, err := readMeta(s.db)
	if err != nil {
		tb.Fatal(err)
	}
	return out, m.next
}

// fzPolls turns fuzz bytes into polls of records: valid values, tombstones,
// and poison of every kind (raw bytes from the input, wrong magic byte,
// unknown schema id, truncations, empty key, empty value).
func fzPolls(codec *serde.Codec[fzUser], data []byte) [][]changelog.Batch {
	var polls [][]changelog.Batch
	cur := map[int32]*changelog.Batch{}
	next := [2]int64{}
	flush := func() {
		var poll []changelog.Batch
		for p := range int32(2) {
			if b, ok := cur[p]; ok {
				poll = append(poll, *b)
			}
		}
		if len(poll) > 0 {
			polls = append(polls, poll)
		}
		clear(cur)
	}
	for len(data) >= 3 {
		op, a, b := data[0], data[1], data[2]
		data = data[3:]
		p := int32(a>>7) & 1
		key := []byte{'k', '0' + a%6}
		var val []byte
		switch op % 12 {
		case 0, 1, 2, 3:
			val, _ = codec.Encode(fzUser{FirstName: fmt.Sprint(b), Age: int32(b)})
		case 4:
			val = nil // tombstone
		case 5: // raw bytes from the input
			n := min(int(b)%16, len(data))
			val, data = bytes.Clone(data[:n]), data[n:]
		case 6:
			val, _ = codec.Encode(fzUser{FirstName: "magic"})
			val[0] = 1 + b%255
		case 7:
			val, _ = codec.Encode(fzUser{FirstName: "id"})
			binary.BigEndian.PutUint32(val[1:5], 1000+uint32(b))
		case 8:
			val, _ = codec.Encode(fzUser{FirstName: "truncated", LastName: "x"})
			val = val[:int(b)%len(val)]
		case 9:
			key = nil
			val, _ = codec.Encode(fzUser{FirstName: "nokey"})
		case 10:
			val = []byte{}
		case 11:
			flush()
			continue
		}
		bt, ok := cur[p]
		if !ok {
			bt = &changelog.Batch{Partition: p}
			cur[p] = bt
		}
		bt.Records = append(bt.Records, changelog.Record{Key: key, Value: val, Offset: next[p]})
		next[p]++
		bt.Next = next[p] + int64(b%3) // control records leave gaps
		next[p] = bt.Next
	}
	flush()
	return polls
}

// FuzzApplyBatches drives the restore applier with random polls of records,
// poison included: it must never panic; under PoisonSkip the cache must
// equal a model of the valid records; under PoisonFail the first poll with
// poison must fail with a *PoisonError and leave the cache (and its
// checkpoint) as the previous polls left it.
func FuzzApplyBatches(f *testing.F) {
	f.Add([]byte{0, 1, 2, 4, 1, 0, 11, 0, 0, 5, 2, 3, 'x', 'y', 'z', 0, 130, 9})
	f.Add([]byte{0, 0, 1, 6, 0, 1, 7, 0, 2, 8, 0, 3, 9, 0, 4, 10, 0, 5})
	f.Add([]byte{1, 129, 7, 11, 0, 0, 4, 129, 0, 2, 3, 4, 8, 3, 20})
	stores := map[PoisonPolicy]*Store[fzUser]{PoisonSkip: fzStore(f, PoisonSkip), PoisonFail: fzStore(f, PoisonFail)}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 3*400 {
			return
		}
		for _, policy := range []PoisonPolicy{PoisonSkip, PoisonFail} {
			s := stores[policy]
			s.fzReset(t)
			polls := fzPolls(s.codec, data)
			model := [2]map[string]string{{}, {}}
			offs := map[int32]int64{0: 0, 1: 0}
			for _, poll := range polls {
				nextModel := [2]map[string]string{maps.Clone(model[0]), maps.Clone(model[1])}
				nextOffs := maps.Clone(offs)
				poisoned := false
				for _, b := range poll {
					for _, r := range b.Records {
						valid := len(r.Key) > 0 && (r.Value == nil || (len(r.Value) > 0 && s.codec.Check(context.Background(), r.Value) == nil))
						switch {
						case !valid:
							poisoned = true
						case r.Value == nil:
							delete(nextModel[b.Partition], string(r.Key))
						default:
							nextModel[b.Partition][string(r.Key)] = string(r.Value)
						}
					}
					nextOffs[b.Partition] = b.Next
				}
				err := s.applyBatches(context.Background(), poll)
				if policy == PoisonFail && poisoned {
					var pe *PoisonError
					if !errors.As(err, &pe) {
						t.Fatalf("poll with poison: want a *PoisonError, got %v", err)
					}
					break // the cache must still equal model, offs
				}
				if err != nil {
					t.Fatalf("apply: %v", err)
				}
				model, offs = nextModel, nextOffs
			}
			got, gotOffs := s.fzDump(t)
			if !maps.Equal(got[0], model[0]) || !maps.Equal(got[1], model[1]) {
				t.Fatalf("policy %v: cache %q, want %q", policy, got, model)
			}
			if !maps.Equal(gotOffs, offs) {
				t.Fatalf("policy %v: checkpoint %v, want %v", policy, gotOffs, offs)
			}
		}
	})
}
