package extsort_test

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"syscall"
	"testing"
	"time"

	"github.com/compactkv/compactkv/internal/extsort"
	"github.com/compactkv/compactkv/internal/pagewriter"
)

// restoreInput models what a full restore feeds the Sorter: n records of
// 16-byte random keys and 42-byte values over 6 partitions, 3% of them a
// later version of an earlier record's key (in its partition), 2% of them
// tombstones. Records are made on the fly, the same for every seed, so
// that the benchmark holds none of them itself.
type restoreInput struct {
	key [16]byte
	val [42]byte
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// record returns the i-th record; key and val are reused by the next call.
func (in *restoreInput) record(i int) (part int32, key, val []byte) {
	r := splitmix(uint64(i) ^ 0x5151)
	id := uint64(i)
	if r%100 < 3 && i > 0 { // a later version of an earlier key
		id = (r >> 8) % uint64(i)
	}
	binary.LittleEndian.PutUint64(in.key[:8], splitmix(id))
	binary.LittleEndian.PutUint64(in.key[8:], splitmix(id+1<<40))
	part = int32(splitmix(id+2<<40) % 6)
	if (r>>20)%50 == 0 { // 2% tombstones
		return part, in.key[:], nil
	}
	for j := 0; j+8 <= len(in.val); j += 8 {
		binary.LittleEndian.PutUint64(in.val[j:], r+uint64(j))
	}
	return part, in.key[:], in.val[:]
}

// heapPeak samples the bytes of heap objects (live, and dead ones not yet
// swept) every few thousand calls, keeping the most seen.
type heapPeak struct {
	s    []metrics.Sample
	n    int
	peak uint64
}

func newHeapPeak() *heapPeak {
	return &heapPeak{s: []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}}
}

func (h *heapPeak) tick() {
	if h.n++; h.n&4095 == 0 {
		h.sample()
	}
}

func (h *heapPeak) sample() {
	metrics.Read(h.s)
	h.peak = max(h.peak, h.s[0].Value.Uint64())
}

// cpuTime returns the CPU time the process used so far, user and system,
// every goroutine's and the garbage collector's.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRestore models kvstore's full restore: every record Added to a
// Sorter with RestoreMemory's default limit (64 MiB), then Each into a
// no-op (sink=none) or into the page writer (sink=pagewriter, a bucket per
// partition, its self-check included). It reports the peak bytes of heap
// objects seen (peak-heap-MiB), the CPU time of the process per op
// (cpu-ms/op: less at the mercy of other processes on a shared machine than
// the time per op), the runs spilled, and the time per op from the last Add
// on (write-ms/op: the merge, and the page writer's file and self-check,
// what a restore's log line calls writing, without the fsync).
func BenchmarkRestore(b *testing.B) {
	for _, n := range []int{1 << 20, 4 << 20} {
		for _, sink := range []string{"none", "pagewriter"} {
			b.Run(fmt.Sprintf("n=%dM/sink=%s", n>>20, sink), func(b *testing.B) {
				dir := b.TempDir()
				in := &restoreInput{}
				var peak uint64
				var runs int
				var cpu, write time.Duration
				b.ReportAllocs()
				b.SetBytes(int64(n) * (16 + 42))
				for range b.N {
					b.StopTimer()
					runtime.GC()
					hp := newHeapPeak()
					cpu0 := cpuTime()
					b.StartTimer()
					s := extsort.New(64<<20, dir, "run-*.tmp")
					for i := range n {
						part, key, val := in.record(i)
						if err := s.Add(part, key, val); err != nil {
							b.Fatal(err)
						}
						hp.tick()
					}
					runs = s.Runs()
					w0 := time.Now()
					each := func(fn func(part int32, key, val []byte) error) error {
						return s.Each(func(part int32, key, val []byte) error {
							hp.tick()
							return fn(part, key, val)
						})
					}
					var err error
					if sink == "none" {
						err = each(func(int32, []byte, []byte) error { return nil })
					} else {
						err = pagewriter.Write(filepath.Join(dir, "restore.db"), func(w pagewriter.Writer) error {
							cur, started := int32(0), false
							return each(func(part int32, key, val []byte) error {
								if !started || part != cur {
									if err := w.Bucket(fmt.Appendf(nil, "p%03d", part)); err != nil {
										return err
									}
									cur, started = part, true
								}
								return w.Put(key, val)
							})
						}, pagewriter.Options{})
					}
					if err != nil {
						b.Fatal(err)
					}
					hp.sample()
					if err := s.Close(); err != nil {
						b.Fatal(err)
					}
					write += time.Since(w0)
					b.StopTimer()
					cpu += cpuTime() - cpu0
					b.StartTimer()
					peak = max(peak, hp.peak)
				}
				b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
				b.ReportMetric(float64(runs), "runs")
				b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
				b.ReportMetric(float64(write.Milliseconds())/float64(b.N), "write-ms/op")
			})
		}
	}
}
