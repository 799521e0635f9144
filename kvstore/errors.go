package kvstore

import (
	"errors"

	"github.com/compactkv/compactkv/changelog"
	"github.com/compactkv/compactkv/serde"
)

var (
	// ErrStopped is wrapped, with the cause, by WaitFor and Sync when a
	// partition they wait for has stopped following the topic for good (a
	// poison record under PoisonFail, a cache file that cannot be written):
	// waiting longer would not help.
	ErrStopped = errors.New("kvstore: partition stopped following the topic")
	// ErrClosed is returned by every method called after Close, except
	// Close itself (which returns nil again) and Stats (which reports the
	// stopped state).
	ErrClosed = errors.New("kvstore: store is closed")

	// ErrEmptyKey is returned by Put and Delete for an empty key: Kafka's
	// compaction needs a key, and an empty one is indistinguishable from a
	// missing one in many clients.
	ErrEmptyKey = errors.New("kvstore: empty key")

	// ErrNotCompacted is returned (wrapped) by Open when the topic exists and
	// its cleanup.policy does not include compact.
	ErrNotCompacted = changelog.ErrNotCompacted

	// ErrIncompatibleSchema is returned (wrapped) by Open when the value schema
	// fails the compatibility check against the registered versions.
	ErrIncompatibleSchema = serde.ErrIncompatibleSchema

	// ErrTypeMismatch is returned (wrapped in a *serde.TypeError naming the
	// field and both types) by Open when V cannot hold the value schema: a
	// schema field without a default that V lacks, a Go type that cannot
	// hold the field's Avro type, or an exported field of V the schema does
	// not have (tag it avro:"-" to leave it out). Nothing was restored.
	ErrTypeMismatch = serde.ErrTypeMismatch

	// ErrUnresolvableSchema is wrapped by the error of a value written with a
	// registered schema that cannot be resolved against the store's schema
	// (for example a required field the writer schema lacks). A restore or
	// the follower treats such a record as poison.
	ErrUnresolvableSchema = serde.ErrUnresolvableSchema

	// ErrInvalidValue is returned (wrapped) by Put when the value does not fit
	// the schema. Nothing was produced.
	ErrInvalidValue = serde.ErrInvalidValue

	// ErrCacheLocked is returned (wrapped) by Open when another store, in
	// this process or another, holds the cache file for longer than
	// LockTimeout: give each store its own Dir.
	ErrCacheLocked = errors.New("kvstore: cache file is locked")

	// ErrDeliveryTimeout is returned (wrapped) by a write the broker did not
	// acknowledge within DeliveryTimeout. The record may still reach the
	// topic; a later read shows it if it did.
	ErrDeliveryTimeout = changelog.ErrDeliveryTimeout

	// ErrBadConfig is returned (wrapped) by Open for a missing or contradictory option.
	ErrBadConfig = errors.New("kvstore: bad configuration")
)
