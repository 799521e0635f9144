// Package kvstore is an embedded key-value store whose source of truth is a
// compacted Kafka topic: Put produces an Avro record (Confluent wire format,
// schema in a schema registry), Delete produces a tombstone, and Get and Scan
// read a local bbolt cache that a changelog consumer restores and keeps
// current.
//
// # Basics
//
//	store, err := kvstore.Open[User](ctx, "user-profiles",
//		kvstore.Brokers("localhost:19092"),
//		kvstore.Registry("http://localhost:18081"),
//		kvstore.ValueSchema(userAvsc),
//		kvstore.Dir("data"))
//	defer store.Close()
//	pos, err := store.Put(ctx, "user-123", User{FirstName: "Ada"}) // pos: where it landed
//	u, ok, err := store.Get(ctx, "user-123")
//	_, err = store.Delete(ctx, "user-123")
//	for e, err := range store.Scan(ctx, "user-") { ... }
//
// Keys are strings, written as their raw UTF-8 bytes as the Kafka key. Values
// are encoded with the schema given to ValueSchema, registered under
// "<topic>-value"; records written with other compatible versions of the
// schema (by this library or by any Confluent-compatible client) decode into
// V through Avro schema resolution.
//
// Open checks V against the schema before it reads anything (serde.New): a
// struct V needs a field, of a Go type that decodes the Avro type exactly
// (for an Avro int: int32 or int; see serde.New), for each schema field
// without a default, and no exported field the
// schema lacks (tag such a field avro:"-"). A mismatch fails Open with
// ErrTypeMismatch naming the field and both types, never as a poison
// record. Put refuses a value that would not be stored whole (a Go int
// beyond int32 for an Avro int) with ErrInvalidValue, naming the field, and
// produces nothing. Logical types keep the precision Avro defines and no
// more: a time.Time under timestamp-millis comes back cut to milliseconds,
// in UTC (compare with Equal after Truncate(time.Millisecond)). The schema is registered under FULL_TRANSITIVE by
// default (SchemaCompatibility), or the registry's own level if stricter: a
// rolling deploy runs old and new versions side by side, each reading what
// the other writes.
//
// # Durability
//
// The topic always wins; the cache is disposable. Put and Delete return only
// after the broker acknowledged the record with acks=all (idempotent
// producer), and only then is the write visible to Get. The cache file,
// "<dir>/<topic>.db", holds per partition a bucket of keys and values and the
// next offset to read, committed in one transaction with the data it
// describes. Open restores from that checkpoint (delta) when the cache can be
// trusted, and otherwise rebuilds the cache from the start of the topic
// (full): when there is no cache, when it is unreadable or of another format,
// when the topic was deleted and recreated (its topic ID changed), and when
// its partition count changed. Each partition is also judged alone: one
// whose checkpoint lies below its log start offset or above its end offset,
// or that was last current longer ago than the topic's delete.retention.ms
// (tombstones it never saw may be gone, and deleted keys would come back;
// the file records per partition when it was last current) is rebuilt alone
// (its bucket refilled from the topic and swapped in one transaction), and
// the other partitions restore a delta; when every partition is refused,
// the whole cache is rebuilt. A full restore must finish within
// delete.retention.ms for the same reason. A full restore sorts the records
// by key within a bounded amount of memory (RestoreMemory), spilling sorted
// runs to the cache directory, and loads them into a new file that replaces
// the old one atomically, so a process killed during a restore leaves the
// previous cache or none. A delta read in Open is served from memory when
// Open returns, and written into the file by the follower right after
// (up to a quarter of RestoreMemory; a larger delta is written as it is
// read, as is one holding keys another partitioner placed): the
// file's checkpoint moves only with that commit, so a crash before it costs
// the next Open the same delta again, never a record. Every commit to the
// cache file, a delta's included, is synced before the next: a power loss,
// like a kill -9, never leaves a checkpoint ahead of the pages it describes.
//
// A damaged cache file never stops the store. Open checks every page of the
// file before bbolt reads it (page types, bounds, key order, the freelist,
// both meta pages); a file that fails is moved aside as
// "<dir>/<topic>.db.corrupt-<ns>" (the newest only: older ones are removed)
// and rebuilt from the topic. Damage a
// running store meets (a Get, or the follower's commit) is returned as an
// error rather than a crash, and the follower rebuilds the file, serving
// reads from it meanwhile. bbolt keeps no checksums of data pages, so bytes
// changed inside a value, with the page's structure intact, are not detected;
// the value then fails to decode and Get says so.
//
// # Freshness and readiness
//
// Stats is one snapshot of the store: per partition its state (restoring,
// following, stalled, stopped), the offset applied, the end offset last
// seen, the lag between them, and CaughtUpAt, the latest moment at which
// reads showed everything the partition then held (the follower asks the
// broker for the end offsets about once a second, so it is that fine).
// OnStateChange is told of every change. A broker that cannot be
// reached stalls the follower (TailErr says why) without stopping it; it
// carries on once the broker answers. Only what retrying cannot mend stops
// it: a poison record under PoisonFail, a cache file that cannot be written,
// Close. Reads keep serving the cache in every state: a stale answer beats
// none, and Stats tells how stale. A partition that has not been caught up
// for longer than the topic's delete.retention.ms (and at least 10s) while
// following is rebuilt from the topic, as Open would after such an absence:
// compaction may have removed tombstones it never read. That partition
// alone is rebuilt when the others are current (every partition: the whole
// file), as is a partition whose next records are gone (deleted or
// expired): its bucket is refilled from the topic in the background and
// swapped in one transaction, while the other partitions read on (Stats
// shows it restoring meanwhile).
//
// # Bounds
//
// Nothing waits on the network without a bound. A write waits for its
// acknowledgement until its ctx ends or DeliveryTimeout (default 2m, as
// Kafka's delivery.timeout.ms) passes, then fails with ErrDeliveryTimeout.
// Close returns within about CloseTimeout (default 5s) with the broker gone
// and writes in flight; those writes fail with ErrClosed. From the moment
// Close is called, Get, Scan and every write return ErrClosed at once.
//
// # Consistency
//
// Reads are local. What they promise, from cheapest to strongest:
//
//   - A plain Get or Scan shows this store's own acknowledged writes at
//     once, and other writers' once the follower has applied them (usually
//     within milliseconds): eventual consistency.
//   - Read-your-writes across instances: Put and Delete return the write's
//     Position, a compact token (Position.String) to hand to whichever
//     instance reads next; WaitFor there returns once that instance shows
//     the write. Positions merge (Position.Merge), so a session that wrote
//     several keys carries one. A Position of another topic, or of this
//     topic before it was recreated, is ErrForeignPosition.
//   - A consistent read: Sync(ctx, keys...) asks the partition leaders for
//     their high watermarks and waits until they are applied, so that the
//     Get after it sees every write acknowledged anywhere before Sync was
//     called (a read barrier in the spirit of etcd's ReadIndex, without its
//     quorum check: see Sync). It costs a ListOffsets round trip and the
//     follower's delay; another producer's open transaction holds it. A read-before-write (delete only if present) should
//     Sync first, or it may act on a stale read.
//
// # Partitioned mode
//
// By default every store holds and serves the whole topic (global mode,
// like Kafka Streams' GlobalKTable): simplest, every read local, and the
// right choice while the topic fits on every instance. When it does not,
// or its write rate outgrows one follower, Group(id) splits the work the
// way Kafka splits it: the stores join consumer group id on the topic
// (Kafka is the only coordinator), each restores, follows and serves only
// the partitions the group assigns it, and Standbys(n) keeps n other
// members warm for each partition. A Get or Scan of a key another member
// owns fails with a *NotOwnerError naming the partition and the owner's
// advertised address (Advertise); Owner(key) tells it before asking.
//
// A partition assigned to a store is served once it has caught up: from
// its checkpoint through the follower when the cache's record of it passes
// the guards (a member that held it before, or its standby), otherwise
// rebuilt from the topic: in the background, one partition at a time, or,
// for a member starting with an empty or refused cache, all the
// partitions it owns in one pass through the sort and the page writer, as
// a full restore, reading only them; until then reads of it fail
// with ErrNotServed, and so do reads of a partition moving between members
// (in a cooperative rebalance, until its new owner has rejoined the group
// and caught up). A member joining a running group hears which partitions
// are moving to it before they are its own (incoming: kept warm as
// standbys while their owners give them up) and starts that one pass then,
// rather than a restore of each as it is handed over (about 100 ms later):
// it serves them once the pass is done and it has caught up with the end
// listed when they became its own; in a group still running members of a
// release before this one (protocol v1), it hears of them only as they are
// handed over. A partition
// taken away is not served from that moment, and its cache is kept for a
// later delta. A member that loses the group (its session expired, or the
// coordinator stopped answering) stops serving at once; the others take its
// partitions after SessionTimeout (a kill -9) or at once (Close, which
// leaves the group). Writes go to Kafka from any member, and Positions,
// WaitFor and Sync work across members for the partitions a store follows.
//
// # Caveats
//
// On a topic with more than one partition, every writer
// must use the same partitioner (KeyPartitioner); a key another client's
// partitioner put elsewhere is still found by Get, but its versions in
// different partitions are not ordered against each other.
//
// Offsets have gaps (compaction, transaction markers, aborted records), and a
// read_committed consumer cannot see where it stands inside one. When a
// partition sends nothing for 3s while the restore is short of its end offset
// and that end has not moved, Open takes the remaining offsets to hold no
// visible records and returns; should the broker merely have been slow, the
// follower applies those records moments later.
package kvstore
