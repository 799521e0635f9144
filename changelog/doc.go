// Package changelog is everything compactkv says to Kafka about one topic:
// it ensures the topic exists with cleanup.policy=compact (kadm), produces
// records and tombstones and waits for the broker's acknowledgement (kgo,
// acks=all, idempotent), and reads partitions from given offsets, handing
// batches of records to whoever applies them.
//
// # Basics
//
// Open connects, creates or validates the topic and returns a *Topic: its
// identity (Info: topic ID, partition count, delete.retention.ms), its start
// and end offsets, a producer (Produce, ProduceAsync) and Readers
// (NewReader). A Reader reads partitions from start offsets and returns, per
// poll, one Batch per partition with the offset to resume from. The client's
// errors reach callers as the package's own (ErrClosed, ErrDeliveryTimeout,
// ErrGap, *PartitionError); no kgo or kadm value crosses the package's edge
// except the options a caller passes in (Config.ClientOpts). The package
// knows nothing about Avro or about the cache the batches go to.
//
// # Durability
//
// Produce returns only after the broker has acknowledged the record with
// acks=all; the idempotent producer keeps retries from writing duplicates.
// Readers use read_committed, so records of aborted transactions are never
// handed out, and control records advance Batch.Next without being handed out.
//
// # Caveats
//
// A Reader returns batches as the broker serves them; records of one
// partition come in offset order, partitions interleave freely. Offsets have
// gaps (compaction, transaction markers): use Batch.Next, never Offset+1 of
// the last record, as the resume point.
package changelog
