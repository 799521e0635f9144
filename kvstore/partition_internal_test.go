package kvstore

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/compactkv/compactkv/changelog"
)

// BenchmarkCheckPartitions measures the misrouted-key check restore and the
// follower run on every record: one hash of the key (records are placed
// correctly, the common case). Compare with BenchmarkRestore's records/s.
func BenchmarkCheckPartitions(b *testing.B) {
	for _, p := range []Partitioner{PartitionerMurmur2, PartitionerCRC32} {
		b.Run(p.String(), func(b *testing.B) {
			s := &Store[struct{}]{part: p.hasher()}
			s.info.Partitions = 6
			bs := make([]changelog.Batch, 6)
			for i := range bs {
				bs[i].Partition = int32(i)
			}
			for i := range 6000 {
				k := []byte(fmt.Sprintf("user-%08d", i))
				q := s.part(k, 6)
				bs[q].Records = append(bs[q].Records, changelog.Record{Key: k, Value: make([]byte, 40)})
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				s.checkPartitions(bs)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*6000), "ns/record")
		})
	}
}

func TestMisroutedKeysAreRememberedUpToTheCap(t *testing.T) {
	var logs bytes.Buffer
	s := &Store[struct{}]{part: PartitionerMurmur2.hasher(), log: slog.New(slog.NewTextHandler(&logs, nil))}
	s.info.Partitions = 6
	for round := range 2 {
		for i := range maxMisroutedKeys + 5 {
			k := []byte(fmt.Sprintf("k-%06d", i))
			s.misrouted(&changelog.Record{Key: k}, (s.part(k, 6)+1)%6, s.part(k, 6))
		}
		if got, want := s.mis.count.Load(), int64((round+1)*(maxMisroutedKeys+5)); got != want {
			t.Fatalf("round %d: misrouted count = %d, want %d: every record counts", round, got, want)
		}
	}
	if len(s.mis.seen) != maxMisroutedKeys {
		t.Fatalf("remembered %d keys, want the cap %d", len(s.mis.seen), maxMisroutedKeys)
	}
	lines := strings.Count(logs.String(), "\n")
	if lines != maxMisroutedKeys+1 {
		t.Fatalf("%d log lines, want one per remembered key and one saying the cap was reached", lines)
	}
}
