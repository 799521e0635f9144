package kvstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The cache file's layout. Bump formatVersion when it changes: a cache of
// another version is rebuilt from the topic.
//
//	meta/format      uint32 formatVersion
//	meta/topic       topic name
//	meta/topic_id    16-byte Kafka topic ID
//	meta/partitions  uint32 partition count
//	offsets/<p>      int64 next offset to read of partition p (p: uint32 BE)
//	current/<p>      int64 unix milliseconds partition p was last known current
//	part-NNNNN/<key> raw value bytes of partition NNNNN (Confluent-framed Avro)
//
// A data change and the offset it came from are committed in one transaction.
// Version 1 had one meta/current_at for the whole file; version 2 keeps it
// per partition, so that a partition left behind is rebuilt alone.
const formatVersion = 2

var (
	bucketMeta    = []byte("meta")
	bucketOffsets = []byte("offsets")
	bucketCurrent = []byte("current")
	keyFormat     = []byte("format")
	keyTopic      = []byte("topic")
	keyTopicID    = []byte("topic_id")
	keyPartitions = []byte("partitions")
)

func partBucket(p int32) []byte { return fmt.Appendf(nil, "part-%05d", p) }

func partKey(p int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(p)) }

// cacheMeta is what the meta and offsets buckets say about a cache.
type cacheMeta struct {
	format     uint32
	topic      string
	topicID    [16]byte
	partitions int32
	next       map[int32]int64     // checkpoint: next offset to read
	current    map[int32]time.Time // when each partition was last known current
}

// errNoMeta means the file holds no (complete) cache.
var errNoMeta = errors.New("no cache metadata")

func readMeta(db *bolt.DB) (cacheMeta, error) {
	var m cacheMeta
	fi, err := os.Stat(db.Path())
	if err != nil {
		return m, err
	}
	err = db.View(func(tx *bolt.Tx) error {
		// A file shorter than the pages its meta page claims was truncated:
		// reading those pages would fault.
		if tx.Size() > fi.Size() {
			return fmt.Errorf("%w: file is %d bytes, its meta page needs %d (truncated)", errNoMeta, fi.Size(), tx.Size())
		}
		mb := tx.Bucket(bucketMeta)
		if mb == nil {
			return errNoMeta
		}
		f := mb.Get(keyFormat)
		if len(f) != 4 {
			return fmt.Errorf("%w: meta bucket has no format version", errNoMeta)
		}
		if m.format = binary.BigEndian.Uint32(f); m.format != formatVersion {
			return nil // decideGuard refuses it; the rest may be laid out otherwise
		}
		ob, cb := tx.Bucket(bucketOffsets), tx.Bucket(bucketCurrent)
		id, n := mb.Get(keyTopicID), mb.Get(keyPartitions)
		if ob == nil || cb == nil || len(id) != 16 || len(n) != 4 {
			return fmt.Errorf("%w: meta bucket is incomplete", errNoMeta)
		}
		m.topic = string(mb.Get(keyTopic))
		copy(m.topicID[:], id)
		m.partitions = int32(binary.BigEndian.Uint32(n))
		var err error
		if m.next, err = readPartitionInts(ob, "offsets"); err != nil {
			return err
		}
		cur, err := readPartitionInts(cb, "current")
		m.current = make(map[int32]time.Time, len(cur))
		for p, ms := range cur {
			m.current[p] = time.UnixMilli(ms)
		}
		return err
	})
	return m, err
}

// readPartitionInts reads a bucket of partition -> int64 entries.
func readPartitionInts(b *bolt.Bucket, name string) (map[int32]int64, error) {
	out := make(map[int32]int64)
	err := b.ForEach(func(k, v []byte) error {
		if len(k) != 4 || len(v) != 8 {
			return fmt.Errorf("%w: bad %s entry", errNoMeta, name)
		}
		out[int32(binary.BigEndian.Uint32(k))] = int64(binary.BigEndian.Uint64(v))
		return nil
	})
	return out, err
}

// writeMeta writes the cache's identity, every partition's next offset, and
// now as the time every partition was current, inside tx.
func writeMeta(tx *bolt.Tx, topic string, id [16]byte, partitions int32, next map[int32]int64, now time.Time) error {
	mb, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	puts := [][2][]byte{
		{keyFormat, binary.BigEndian.AppendUint32(nil, formatVersion)},
		{keyTopic, []byte(topic)},
		{keyTopicID, id[:]},
		{keyPartitions, binary.BigEndian.AppendUint32(nil, uint32(partitions))},
	}
	for _, kv := range puts {
		if err := mb.Put(kv[0], kv[1]); err != nil {
			return err
		}
	}
	for p := range partitions {
		if _, err := tx.CreateBucketIfNotExists(partBucket(p)); err != nil {
			return err
		}
	}
	if err := putOffsets(tx, next); err != nil {
		return err
	}
	if now.IsZero() { // a file no partition has been restored into yet
		_, err := tx.CreateBucketIfNotExists(bucketCurrent)
		return err
	}
	return putCurrent(tx, allAt(partitions, now))
}

// allAt returns at for each of partitions partitions.
func allAt(partitions int32, at time.Time) map[int32]time.Time {
	m := make(map[int32]time.Time, partitions)
	for p := range partitions {
		m[p] = at
	}
	return m
}

func putOffsets(tx *bolt.Tx, next map[int32]int64) error {
	ob, err := tx.CreateBucketIfNotExists(bucketOffsets)
	if err != nil {
		return err
	}
	for p, o := range next {
		if err := ob.Put(partKey(p), binary.BigEndian.AppendUint64(nil, uint64(o))); err != nil {
			return err
		}
	}
	return nil
}

// putCurrent records, inside tx, that partition p was current at at[p].
func putCurrent(tx *bolt.Tx, at map[int32]time.Time) error {
	if len(at) == 0 {
		return nil
	}
	cb, err := tx.CreateBucketIfNotExists(bucketCurrent)
	if err != nil {
		return err
	}
	for p, t := range at {
		if err := cb.Put(partKey(p), binary.BigEndian.AppendUint64(nil, uint64(t.UnixMilli()))); err != nil {
			return err
		}
	}
	return nil
}

// openBolt opens path with the store's settings. timeout bounds the wait for
// the file lock another process holds.
//
// The freelist is synced (written with every commit, as bbolt does by
// default): bbolt then reads it at open instead of walking every page of the
// file to find the free ones, a walk that panics on its own goroutine, out of
// reach of any recover, when it meets a damaged page. A file without a
// freelist (written with NoFreelistSync by an earlier version) gets one at
// its first open, after one such walk; Open has checked the file by then
// (checkFile).
//
// The in-memory freelist is bbolt's array type (its default): the map type
// sorts every free page ID at every commit to write the synced freelist,
// which on a file with tens of thousands of free pages (a burst of writes
// into a bulk-loaded file leaves that many) cost about 2 ms a commit, and
// so of every write's way to the other stores. The type does not change
// what is on disk.
func openBolt(path string, timeout time.Duration, noSync bool) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      timeout,
		NoSync:       noSync,
		FreelistType: bolt.FreelistArrayType,
	})
	if err != nil {
		return nil, err
	}
	return db, nil
}

// replaceFile atomically moves tmp over path and makes the rename durable.
func replaceFile(tmp, path string) error {
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// lookupIn returns a copy of key's value in bucket name, if present.
func lookupIn(tx *bolt.Tx, name, key []byte) ([]byte, bool) {
	b := tx.Bucket(name)
	if b == nil {
		return nil, false
	}
	v := b.Get(key)
	if v == nil {
		return nil, false
	}
	return bytes.Clone(v), true
}
