package kvstore

import (
	"errors"

	"github.com/compactkv/compactkv/changelog"
	"github.com/compactkv/compactkv/serde"
)

var (
	// ErrClosed is returned by every method called after Close.
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

	// ErrInvalidValue is returned (wrapped) by Put when the value does not fit
	// the schema. Nothing was produced.
	ErrInvalidValue = serde.ErrInvalidValue

	// ErrCacheLocked is returned (wrapped) by Open when another process holds
	// the cache file for longer than LockTimeout.
	ErrCacheLocked = errors.New("kvstore: cache file is locked")

	// ErrBadConfig is returned (wrapped) by Open for a missing or contradictory option.
	ErrBadConfig = errors.New("kvstore: bad configuration")
)
