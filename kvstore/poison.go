package kvstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/changelog"
	"github.com/compactkv/compactkv/serde"
)

// PoisonPolicy says what a restore and the follower do with a poison record:
// a record in the topic that this store could never serve, because its key is
// empty or its value is not a Confluent-framed Avro value that decodes with a
// schema the registry knows (written raw by some other producer, truncated,
// framed with another magic byte or an unknown schema ID).
type PoisonPolicy int

const (
	// PoisonFail stops at the first poison record: Open fails, or the store
	// stops following the topic (TailErr), with a *PoisonError naming the
	// topic, partition and offset. Nothing from the poll holding the record
	// is applied, so the cache keeps its last good state and its checkpoint
	// stays before the record. The default.
	PoisonFail PoisonPolicy = iota
	// PoisonSkip leaves poison records out: each is logged (Warn, with
	// topic, partition, offset and reason) and counted (Stats().PoisonSkipped), and
	// the key keeps the value it had before.
	PoisonSkip
)

// String returns the policy's name: "fail" or "skip".
func (p PoisonPolicy) String() string {
	switch p {
	case PoisonFail:
		return "fail"
	case PoisonSkip:
		return "skip"
	}
	return fmt.Sprintf("PoisonPolicy(%d)", int(p))
}

// OnPoison sets what to do with poison records. Default PoisonFail.
func OnPoison(p PoisonPolicy) Option { return optFn(func(c *config) { c.poison = p }) }

// ErrPoison is wrapped by every *PoisonError.
var ErrPoison = errors.New("kvstore: poison record")

// PoisonError is a record this store cannot serve, and where it is. It
// unwraps to ErrPoison and to the decoding error (serde.ErrMalformed,
// serde.ErrUnknownSchema or serde.ErrUnresolvableSchema) when there is one.
type PoisonError struct {
	Topic     string
	Partition int32
	Offset    int64
	Reason    string // "empty key", "key of N bytes, ...", "empty value ...", "malformed value", "unknown schema", "unresolvable schema"
	Err       error  // the decoding error; nil for an empty key or value
}

// Error says which record (topic, partition, offset) is poison and why.
func (e *PoisonError) Error() string {
	msg := fmt.Sprintf("kvstore: poison record in topic %q partition %d offset %d: %s", e.Topic, e.Partition, e.Offset, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns ErrPoison and the decoding error.
func (e *PoisonError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrPoison}
	}
	return []error{ErrPoison, e.Err}
}

// An unavailable registry says nothing about a record, so it never makes a
// record poison. During Open, checking waits for it up to registryWait (and
// Open's ctx), then Open fails. While following the topic, the check gives up
// after followRegistryWait and the record is applied unchecked (logged): the
// follower neither stops nor drops it, and Get of that key reports the
// decoding error, if any, once it can be told. The follower reads nothing
// else meanwhile, so its wait is short.
const (
	registryWait       = 15 * time.Second
	followRegistryWait = 2 * time.Second
)

// checkRecord returns a *PoisonError if r can never be served, another error
// if that cannot be told now (the registry is unavailable), nil if r is good.
// It checks cheapest first: the key, the tombstone case, the Confluent header
// and its schema ID (resolved once per ID and cached by the codec), and last
// the body (serde's Codec.Check: a walk of its bytes where the schemas allow,
// else a full decode), which is what finds truncated or garbled bodies.
func (s *Store[V]) checkRecord(ctx context.Context, part int32, r *changelog.Record, retry bool) error {
	poison := func(reason string, err error) error {
		return &PoisonError{Topic: s.topic, Partition: part, Offset: r.Offset, Reason: reason, Err: err}
	}
	if len(r.Key) == 0 {
		return poison("empty key", nil)
	}
	if len(r.Key) > bolt.MaxKeySize {
		return poison(fmt.Sprintf("key of %d bytes, longer than the cache allows (%d)", len(r.Key), bolt.MaxKeySize), nil)
	}
	if r.Value == nil {
		return nil // a tombstone
	}
	if len(r.Value) == 0 {
		return poison("empty value (not a null tombstone)", nil)
	}
	backoff := 50 * time.Millisecond
	for {
		err := s.codec.Check(ctx, r.Value)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, serde.ErrRegistryUnavailable):
			if !retry {
				return fmt.Errorf("kvstore: cannot check the record at topic %q partition %d offset %d: %w",
					s.topic, part, r.Offset, err)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("kvstore: cannot check the record at topic %q partition %d offset %d: %w",
					s.topic, part, r.Offset, err)
			case <-time.After(backoff):
				backoff = min(2*backoff, time.Second)
			}
		case errors.Is(err, serde.ErrUnknownSchema):
			return poison("unknown schema", err)
		case errors.Is(err, serde.ErrUnresolvableSchema):
			return poison("unresolvable schema", err)
		default:
			return poison("malformed value", err)
		}
	}
}

// screen checks every record of bs and returns the batches to apply: bs
// itself when all are good; under PoisonSkip a copy without the poison
// records (Next unchanged, so the checkpoint moves past them); under
// PoisonFail the first *PoisonError. bs is not modified.
func (s *Store[V]) screen(ctx context.Context, bs []changelog.Batch) ([]changelog.Batch, error) {
	opening := !s.opened
	wait := registryWait
	if !opening {
		wait = followRegistryWait
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var out []changelog.Batch
	for i, b := range bs {
		var keep []changelog.Record // nil until the first poison record of b
		for j := range b.Records {
			r := &b.Records[j]
			err := s.checkRecord(ctx, b.Partition, r, opening)
			if err != nil && !opening && errors.Is(err, serde.ErrRegistryUnavailable) {
				s.log.Warn("kvstore: schema registry unavailable, record applied unchecked",
					"partition", b.Partition, "offset", r.Offset, "err", err)
				err = nil
			}
			if err == nil {
				if keep != nil {
					keep = append(keep, *r)
				}
				continue
			}
			var pe *PoisonError
			if !errors.As(err, &pe) || s.cfg.poison != PoisonSkip {
				return nil, err
			}
			s.poisonSkipped.Add(1)
			s.log.Warn("kvstore: skipped poison record", "partition", pe.Partition, "offset", pe.Offset,
				"reason", pe.Reason, "err", pe.Err)
			if keep == nil {
				keep = append(make([]changelog.Record, 0, len(b.Records)), b.Records[:j]...)
			}
		}
		if keep == nil {
			continue
		}
		if out == nil {
			out = append([]changelog.Batch(nil), bs...)
		}
		out[i].Records, out[i].Bytes = keep, 0
		for _, r := range keep {
			out[i].Bytes += len(r.Key) + len(r.Value)
		}
	}
	if out == nil {
		return bs, nil
	}
	return out, nil
}
