package serde

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

// Compatibility is the rule New checks a schema against before registering
// it. It reuses the registry's names (sr.CompatBackward, ...).
type Compatibility = sr.CompatibilityLevel

// Codec encodes values of type V with one reader schema and decodes values
// written with any compatible registered schema into V. It is safe for
// concurrent use.
type Codec[V any] struct {
	client  *sr.Client
	subject string
	reader  avro.Schema
	id      int
	header  []byte // Confluent header for id, never modified

	mu       sync.Mutex                          // serialises registry fetches
	decoders atomic.Pointer[map[int]avro.Schema] // writer id -> resolved schema, copy on write
}

// SubjectFor returns the subject a topic's values are registered under with
// the TopicNameStrategy: "<topic>-value".
func SubjectFor(topic string) string { return topic + "-value" }

// New parses schema, checks it against the subject's registered versions
// with the given compatibility rule (sr.CompatBackward is the usual choice;
// sr.CompatNone skips the check), registers it if it is not registered yet,
// and returns a codec that encodes with it. An incompatible schema is refused
// with ErrIncompatibleSchema before anything is sent to the registry.
func New[V any](ctx context.Context, client *sr.Client, subject, schema string, compat Compatibility) (*Codec[V], error) {
	reader, err := avro.Parse(schema)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSchema, err)
	}
	// Register the schema as written (whitespace removed), not reader.String():
	// that is Avro's canonical form, which drops field defaults, so a registry
	// that checks compatibility (Confluent's, Apicurio's) would see v2's new
	// optional field without its default and refuse it as incompatible.
	want := sr.Schema{Schema: compactJSON(schema), Type: sr.TypeAvro}

	// Already registered (any version): use its ID as it is.
	if ss, err := client.LookupSchema(ctx, subject, want); err == nil {
		return newCodec[V](client, subject, reader, ss.ID), nil
	} else if !isNotFound(err) {
		return nil, fmt.Errorf("serde: look up schema under subject %q: %w", subject, err)
	}

	if err := checkCompatible(ctx, client, subject, reader, compat); err != nil {
		return nil, err
	}
	ss, err := client.CreateSchema(ctx, subject, want)
	if err != nil {
		return nil, fmt.Errorf("serde: register schema under subject %q: %w", subject, err)
	}
	return newCodec[V](client, subject, reader, ss.ID), nil
}

func newCodec[V any](client *sr.Client, subject string, reader avro.Schema, id int) *Codec[V] {
	var h sr.ConfluentHeader
	header, _ := h.AppendEncode(nil, id, nil) // never fails
	c := &Codec[V]{client: client, subject: subject, reader: reader, id: id, header: header}
	m := map[int]avro.Schema{id: reader}
	c.decoders.Store(&m)
	return c
}

// checkCompatible checks reader against the latest registered version (or all
// versions for the transitive levels) of subject.
func checkCompatible(ctx context.Context, client *sr.Client, subject string, reader avro.Schema, compat Compatibility) error {
	var transitive, backward, forward bool
	switch compat {
	case sr.CompatNone:
		return nil
	case sr.CompatBackward:
		backward = true
	case sr.CompatBackwardTransitive:
		backward, transitive = true, true
	case sr.CompatForward:
		forward = true
	case sr.CompatForwardTransitive:
		forward, transitive = true, true
	case sr.CompatFull:
		backward, forward = true, true
	case sr.CompatFullTransitive:
		backward, forward, transitive = true, true, true
	default:
		return fmt.Errorf("serde: unknown compatibility level %v", compat)
	}
	versions := []int{-1}
	if transitive {
		vs, err := client.SubjectVersions(ctx, subject)
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("serde: list versions of subject %q: %w", subject, err)
		}
		versions = vs
	}
	sc := avro.NewSchemaCompatibility()
	for _, v := range versions {
		ss, err := client.SchemaByVersion(ctx, subject, v)
		if isNotFound(err) {
			continue // nothing registered yet
		}
		if err != nil {
			return fmt.Errorf("serde: fetch version %d of subject %q: %w", v, subject, err)
		}
		old, err := avro.Parse(ss.Schema.Schema)
		if err != nil {
			return &SchemaError{Subject: subject, ID: ss.ID, Err: ErrUnknownSchema, Cause: err}
		}
		if backward {
			if err := sc.Compatible(reader, old); err != nil {
				return fmt.Errorf("%w: subject %q version %d: new schema cannot read old data (%s): %v",
					ErrIncompatibleSchema, subject, ss.Version, compat, err)
			}
		}
		if forward {
			if err := sc.Compatible(old, reader); err != nil {
				return fmt.Errorf("%w: subject %q version %d: old schema cannot read new data (%s): %v",
					ErrIncompatibleSchema, subject, ss.Version, compat, err)
			}
		}
	}
	return nil
}

func isNotFound(err error) bool {
	var re *sr.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

// ID returns the registry ID of the codec's reader schema, the ID Encode writes.
func (c *Codec[V]) ID() int { return c.id }

// Schema returns the reader schema.
func (c *Codec[V]) Schema() avro.Schema { return c.reader }

// Encode returns v in the Confluent wire format under the reader schema. A
// value that does not fit the schema returns ErrInvalidValue. The returned
// slice is owned by the caller.
func (c *Codec[V]) Encode(v V) ([]byte, error) {
	body, err := avro.Marshal(c.reader, v)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidValue, err)
	}
	out := make([]byte, 0, len(c.header)+len(body))
	out = append(out, c.header...)
	return append(out, body...), nil
}

// Decode decodes b, written with any schema registered in the codec's
// registry, into v. The writer schema is fetched once per ID and resolved
// against the reader schema, so fields added with defaults are filled in and
// removed fields are skipped. On error v may be partly written (decoding goes
// field by field), so pass a fresh value when that matters.
func (c *Codec[V]) Decode(ctx context.Context, b []byte, v *V) error {
	id, body, err := (*sr.ConfluentHeader)(nil).DecodeID(b)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	schema, err := c.writer(ctx, id)
	if err != nil {
		return err
	}
	return decodeBody(schema, id, body, v) // not avro.Unmarshal: see reader.go
}

// Check reports whether b would decode: it decodes into a scratch value and
// discards it. Restores use it to find poison records.
func (c *Codec[V]) Check(ctx context.Context, b []byte) error {
	var v V
	return c.Decode(ctx, b, &v)
}

// writer returns the resolved schema for writer ID id, fetching it from the
// registry the first time.
func (c *Codec[V]) writer(ctx context.Context, id int) (avro.Schema, error) {
	if s, ok := (*c.decoders.Load())[id]; ok {
		return s, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := *c.decoders.Load()
	if s, ok := cur[id]; ok {
		return s, nil
	}
	ss, err := c.client.SchemaByID(ctx, id)
	if err != nil {
		if !isNotFound(err) {
			err = fmt.Errorf("%w: %w", ErrRegistryUnavailable, err)
		}
		return nil, &SchemaError{Subject: c.subject, ID: id, Err: ErrUnknownSchema, Cause: err}
	}
	if ss.Type != sr.TypeAvro {
		return nil, &SchemaError{Subject: c.subject, ID: id, Err: ErrUnknownSchema, Cause: fmt.Errorf("schema type %v is not Avro", ss.Type)}
	}
	w, err := avro.Parse(ss.Schema)
	if err != nil {
		return nil, &SchemaError{Subject: c.subject, ID: id, Err: ErrUnknownSchema, Cause: err}
	}
	resolved, err := avro.NewSchemaCompatibility().Resolve(c.reader, w)
	if err != nil {
		return nil, &SchemaError{Subject: c.subject, ID: id, Err: ErrUnknownSchema, Cause: err}
	}
	next := make(map[int]avro.Schema, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[id] = resolved
	c.decoders.Store(&next)
	return resolved, nil
}
