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
//	meta/current_at  int64 unix milliseconds the cache was last known current
//	offsets/<p>      int64 next offset to read of partition p (p: uint32 BE)
//	part-NNNNN/<key> raw value bytes of partition NNNNN (Confluent-framed Avro)
//
// A data change and the offset it came from are committed in one transaction.
const formatVersion = 1

var (
	bucketMeta    = []byte("meta")
	bucketOffsets = []byte("offsets")
	keyFormat     = []byte("format")
	keyTopic      = []byte("topic")
	keyTopicID    = []byte("topic_id")
	keyPartitions = []byte("partitions")
	keyCurrentAt  = []byte("current_at")
)

func partBucket(p int32) []byte { return fmt.Appendf(nil, "part-%05d", p) }

func partKey(p int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(p)) }

// cacheMeta is what the meta and offsets buckets say about a cache.
type cacheMeta struct {
	format     uint32
	topic      string
	topicID    [16]byte
	partitions int32
	currentAt  time.Time
	next       map[int32]int64
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
		mb, ob := tx.Bucket(bucketMeta), tx.Bucket(bucketOffsets)
		if mb == nil || ob == nil {
			return errNoMeta
		}
		f, id, n, cur := mb.Get(keyFormat), mb.Get(keyTopicID), mb.Get(keyPartitions), mb.Get(keyCurrentAt)
		if len(f) != 4 || len(id) != 16 || len(n) != 4 || len(cur) != 8 {
			return fmt.Errorf("%w: meta bucket is incomplete", errNoMeta)
		}
		m.format = binary.BigEndian.Uint32(f)
		m.topic = string(mb.Get(keyTopic))
		copy(m.topicID[:], id)
		m.partitions = int32(binary.BigEndian.Uint32(n))
		m.currentAt = time.UnixMilli(int64(binary.BigEndian.Uint64(cur)))
		m.next = make(map[int32]int64)
		return ob.ForEach(func(k, v []byte) error {
			if len(k) != 4 || len(v) != 8 {
				return fmt.Errorf("%w: bad offsets entry", errNoMeta)
			}
			m.next[int32(binary.BigEndian.Uint32(k))] = int64(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	return m, err
}

// writeMeta writes the cache's identity, every partition's next offset and
// the current time, inside tx.
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
		{keyCurrentAt, binary.BigEndian.AppendUint64(nil, uint64(now.UnixMilli()))},
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
	return putOffsets(tx, next)
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

func putCurrentAt(tx *bolt.Tx, now time.Time) error {
	mb := tx.Bucket(bucketMeta)
	if mb == nil {
		return errNoMeta
	}
	return mb.Put(keyCurrentAt, binary.BigEndian.AppendUint64(nil, uint64(now.UnixMilli())))
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
func openBolt(path string, timeout time.Duration, noSync bool) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      timeout,
		NoSync:       noSync,
		FreelistType: bolt.FreelistMapType,
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
