package kvstore

import (
	"log/slog"
	"time"
)

// RestoreListener is told about a restore as it happens, in the manner of
// Kafka Streams' StateRestoreListener. Its methods are called from the
// goroutine running the restore (inside Open, or the follower goroutine when
// a running store rebuilds its cache), one at a time; they must return quickly.
type RestoreListener interface {
	// OnRestoreStart is called once the store knows what it will read.
	OnRestoreStart(RestoreStart)
	// OnBatchRestored is called after each batch of records is screened
	// and then applied or held for the follower to write (delta), or handed
	// to the sort for loading (full and partition restores: the sort may
	// still fail, and OnRestoreEnd is then not called).
	OnBatchRestored(BatchRestored)
	// OnRestoreEnd is called when reads show the topic as of the end
	// offsets the restore listed (a delta in Open may still be on its way
	// into the cache file: see RestoreStats.Duration).
	OnRestoreEnd(RestoreStats)
}

// RestoreStart describes a restore about to run.
type RestoreStart struct {
	Mode       string // "full" or "delta"
	Reason     string // why full; empty for delta
	Guard      Guard  // the guard that forced a full restore, GuardNone otherwise
	Partitions []PartitionRange
}

// PartitionRange is the offsets a restore reads of one partition: from
// Start up to (not including) End.
type PartitionRange struct {
	Partition  int32
	Start, End int64 // the restore reads the offsets from Start up to End (excluded)
}

// BatchRestored describes one applied batch.
type BatchRestored struct {
	Partition int32 // the partition the batch is of
	Records   int   // records in the batch, tombstones included
	Bytes     int   // key and value bytes
	Next      int64 // the partition's next offset after the batch
}

// OnRestore sets a listener told about every restore. Default: none.
func OnRestore(l RestoreListener) Option {
	return optFn(func(c *config) { c.listener = l })
}

// ProgressInterval sets how often a running restore logs its progress
// (percent done, records/s, ETA) at Info level; 0 turns the progress log
// off. Default 5s.
func ProgressInterval(d time.Duration) Option {
	return optFn(func(c *config) { c.progressEvery = d })
}

// progress logs a restore's progress at a bounded rate.
type progress struct {
	log         *slog.Logger
	every       time.Duration
	began, last time.Time
	total, done int64 // offsets to read, offsets read
	records     int64
}

func newProgress(log *slog.Logger, every time.Duration, total int64) *progress {
	now := time.Now()
	return &progress{log: log, every: every, began: now, last: now, total: total}
}

// advance records that offsets more offsets and records more records were read.
func (p *progress) advance(offsets, records int64) {
	p.done += offsets
	p.records += records
	now := time.Now()
	if p.every <= 0 || now.Sub(p.last) < p.every || p.total <= 0 {
		return
	}
	p.last = now
	el := now.Sub(p.began).Seconds()
	rate := float64(p.records) / el
	pct := 100 * float64(min(p.done, p.total)) / float64(p.total)
	var eta time.Duration
	if p.done > 0 {
		eta = time.Duration(el * float64(p.total-min(p.done, p.total)) / float64(p.done) * float64(time.Second))
	}
	p.log.Info("kvstore: restoring", "percent", int(pct), "records", p.records,
		"records_per_sec", int64(rate), "eta", eta.Round(time.Second))
}
