package pagewriter

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkWritePages lays out 1M keys of 16 bytes with values of 42 in 6
// buckets, what a full restore's sorted output looks like, without the
// self-check (boltcheck has its own benchmark). It reports the process's
// CPU time per op (cpu-ms/op), steadier than the time on a shared machine.
func BenchmarkWritePages(b *testing.B) {
	const n, buckets = 1 << 20, 6
	data := func(w Writer) error {
		var key [16]byte
		var val [42]byte
		for bk := range buckets {
			if err := w.Bucket(fmt.Appendf(nil, "p%03d", bk)); err != nil {
				return err
			}
			for i := range n / buckets {
				binary.BigEndian.PutUint64(key[:], uint64(i)*0x9e3779b9)
				binary.BigEndian.PutUint64(key[8:], uint64(i))
				binary.LittleEndian.PutUint64(val[:], uint64(i))
				if err := w.Put(key[:], val[:]); err != nil {
					return err
				}
			}
		}
		return nil
	}
	path := filepath.Join(b.TempDir(), "b.db")
	b.SetBytes(n * (16 + 42))
	b.ReportAllocs()
	var cpu time.Duration
	for range b.N {
		c0 := cpuTime()
		if err := writePages(path, 4096, data); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - c0
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
