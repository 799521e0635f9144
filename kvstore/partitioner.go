package kvstore

import (
	"fmt"
	"hash/crc32"
)

// Partitioner picks the partition of a key. Every writer of a topic with more
// than one partition must use the same one, or a key's versions land in
// different partitions and last-write-wins breaks.
type Partitioner int

const (
	// PartitionerMurmur2 is Kafka's Java client default (and franz-go's):
	// murmur2(key) & 0x7fffffff % partitions. librdkafka calls it murmur2_random.
	PartitionerMurmur2 Partitioner = iota
	// PartitionerCRC32 is librdkafka's default (consistent_random, used by
	// confluent-kafka-python): crc32(key) % partitions.
	PartitionerCRC32
)

// String returns the partitioner's name as profilesvc's --partitioner
// takes it: "murmur2" or "crc32".
func (p Partitioner) String() string {
	switch p {
	case PartitionerMurmur2:
		return "murmur2"
	case PartitionerCRC32:
		return "crc32"
	}
	return fmt.Sprintf("Partitioner(%d)", int(p))
}

// hasher returns func(key, n) -> partition.
func (p Partitioner) hasher() func(key []byte, n int32) int32 {
	if p == PartitionerCRC32 {
		return func(key []byte, n int32) int32 { return int32(crc32.ChecksumIEEE(key) % uint32(n)) }
	}
	return func(key []byte, n int32) int32 { return int32((murmur2(key) & 0x7fffffff) % uint32(n)) }
}

// murmur2 is Kafka's murmur2 (the Java client's Utils.murmur2), as franz-go's
// default partitioner uses it for keyed records; a test checks both agree.
// It is here rather than called through kgo because kgo's partitioner takes
// a *kgo.Record, which costs an allocation on every Get.
func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for len(b) >= 4 {
		k := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		b = b[4:]
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
