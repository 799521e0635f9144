package changelog

import (
	"errors"
	"fmt"
)

var (
	// ErrNotCompacted is returned (wrapped) by Open when the topic
	// exists and its cleanup.policy does not include compact.
	ErrNotCompacted = errors.New("changelog: topic is not compacted")

	// ErrTopicMissing is returned (wrapped) when the topic does not exist and
	// creating it was not allowed or it vanished while in use.
	ErrTopicMissing = errors.New("changelog: topic does not exist")

	// ErrGap is returned (wrapped in a *PartitionError) by Reader.Poll when
	// the records at a partition's next offset are gone: deleted, expired, or
	// truncated. Reading on would skip them, so the Reader stops there.
	ErrGap = errors.New("changelog: records at the next offset are gone")

	// ErrClosed is returned (wrapped) by a Topic or Reader used after Close,
	// and by writes that were still in flight when the Topic closed.
	ErrClosed = errors.New("changelog: closed")

	// ErrDeliveryTimeout is returned (wrapped) by a write the broker did not
	// acknowledge within Config.DeliveryTimeout. The record may still reach
	// the topic.
	ErrDeliveryTimeout = errors.New("changelog: write not acknowledged within the delivery timeout")
)

// PartitionError says which topic, partition and offset an error belongs to.
type PartitionError struct {
	Topic     string
	Partition int32
	Offset    int64 // -1 if unknown
	Err       error // what went wrong
}

// Error names the topic, the partition, the offset if known, and Err.
func (e *PartitionError) Error() string {
	if e.Offset < 0 {
		return fmt.Sprintf("changelog: topic %q partition %d: %v", e.Topic, e.Partition, e.Err)
	}
	return fmt.Sprintf("changelog: topic %q partition %d offset %d: %v", e.Topic, e.Partition, e.Offset, e.Err)
}

// Unwrap returns the underlying error.
func (e *PartitionError) Unwrap() error { return e.Err }
