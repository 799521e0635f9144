package httpapi

import (
	"sync"
	"time"

	"github.com/compactkv/compactkv/kvstore"
)

// progress follows the store's restore so that /readyz can say how far it
// is before the store is ready.
type progress struct {
	mu sync.Mutex
	restoreState
	// Since the start, over every restore (partitioned mode restores its
	// partitions one by one, as they are assigned): what this instance
	// read, and how long its restores took.
	sumRecords, sumBytes int64
	sumDuration          time.Duration
}

type restoreState struct {
	started     bool
	began       time.Time
	mode        string
	reason      string
	partitions  int32
	records     int64
	bytes       int64
	total, done int64 // offsets to read, offsets read
	next        map[int32]int64
}

// RestoreListener returns the listener to pass to kvstore.OnRestore
// so that /readyz reports the restore's progress while it runs.
func (a *API) RestoreListener() kvstore.RestoreListener { return &a.progress }

func (p *progress) OnRestoreStart(s kvstore.RestoreStart) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.Mode == "partition" && p.started && p.mode == "partition" {
		// Partitioned mode: partitions restore one by one, maybe at once;
		// the progress shown covers them all.
		for _, r := range s.Partitions {
			p.total += max(0, r.End-r.Start)
			p.next[r.Partition] = r.Start
		}
		return
	}
	p.restoreState = restoreState{started: true, began: time.Now(), mode: s.Mode, reason: s.Reason,
		partitions: int32(len(s.Partitions)), next: map[int32]int64{}}
	for _, r := range s.Partitions {
		p.total += max(0, r.End-r.Start)
		p.next[r.Partition] = r.Start
	}
}

func (p *progress) OnBatchRestored(b kvstore.BatchRestored) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.records += int64(b.Records)
	p.bytes += int64(b.Bytes)
	p.sumRecords += int64(b.Records)
	p.sumBytes += int64(b.Bytes)
	p.done += max(0, b.Next-p.next[b.Partition])
	p.next[b.Partition] = b.Next
}

func (p *progress) OnRestoreEnd(s kvstore.RestoreStats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sumDuration += s.Duration
}

// sums returns what every restore so far read, and their time.
func (p *progress) sums() (records, bytes int64, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sumRecords, p.sumBytes, p.sumDuration
}

// fill writes the restore's progress so far into rd.
func (p *progress) fill(rd *readiness) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		return
	}
	rd.Mode, rd.Reason, rd.Partitions = p.mode, p.reason, p.partitions
	rd.RestoredRecords, rd.RestoredBytes = p.records, p.bytes
	rd.DurationMS = time.Since(p.began).Milliseconds()
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(min(p.done, p.total)) / float64(p.total)
	}
	rd.Percent = &pct
}
