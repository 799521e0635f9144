package serde

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

// Compatibility is a rule New checks a schema against before registering
// it. It reuses the registry's names (sr.CompatFullTransitive, ...).
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

	check check      // range checks Encode runs first; nil when none can fail
	mode  encodeMode // how Encode hands the value to check
	walk  bool       // V is walkable: Check may walk bodies instead of decoding them

	mu       sync.Mutex                           // serialises registry fetches
	decoders atomic.Pointer[map[int]writerSchema] // writer id -> resolved schema, copy on write
}

// writerSchema is what the codec keeps of one writer schema: the schema it
// resolves to against the reader schema, and Check's fast path for it (nil
// when there is none: see walker).
type writerSchema struct {
	resolved avro.Schema
	walk     *walker
}

// encodeMode says how Encode reaches the value its check looks at.
type encodeMode int

const (
	encodeDirect encodeMode = iota // no check
	encodeStruct                   // V is a struct: check &v, encode &v
	encodeElem                     // V is a pointer to a struct: check what it points to
	encodeCopy                     // anything else: check a copy
)

// SubjectFor returns the subject a topic's values are registered under with
// the TopicNameStrategy: "<topic>-value".
func SubjectFor(topic string) string { return topic + "-value" }

// CheckSchema reports whether schema is a valid Avro schema, with an error
// wrapping ErrInvalidSchema if not. It asks no registry.
func CheckSchema(schema string) error {
	if _, err := avro.Parse(schema); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSchema, err)
	}
	return nil
}

// New parses schema, checks that V can hold it, checks it against the
// subject's registered versions, registers it if it is not registered yet,
// and returns a codec that encodes with it.
//
// V must hold the schema: when V is a struct (or a pointer to one), every
// schema field without a default needs a field of V, found as hamba/avro
// finds it (the avro tag, else the Go name; fields of embedded structs
// count), of a Go type that can hold every value of the Avro type: int32 or
// int for int, int64 (or a 64-bit int) for long, float32 for float, float64
// for double, string for string and enum, []byte for bytes, [N]byte for
// fixed, a slice for array, a map with string keys for map, a pointer (or a
// slice) for a union of null and one type, map[string]any or any for other
// unions, a struct (or a pointer to one) for record, time.Time for the date
// and timestamp logical types, time.Duration for time-millis and
// time-micros; nested records are checked the same way. Narrower integers
// (int8, uint16, int32 for long, ...) are refused, since they would cut what
// other writers wrote, and so are the unsigned ones and float64 for an Avro
// float, which hamba/avro cannot read back. An exported field of V that the
// schema does not have is refused too, so that a value is never stored
// without a field its type has; tag it avro:"-" to leave it out on purpose
// (hamba/avro then neither writes nor reads it). A mismatch returns a
// *TypeError wrapping ErrTypeMismatch, naming the field and both types,
// before New talks to the registry. Any other V (map[string]any, any, a
// primitive) is not checked at New; Encode still checks the ints it holds.
//
// A schema the subject already has (any version) is used as it is. A new one
// is checked first under the stricter of compat and the registry's own level
// for the subject (its global level when the subject has none). Two levels
// combine direction by direction, each taking the longer reach: BACKWARD
// with FORWARD is FULL, anything with FULL_TRANSITIVE is FULL_TRANSITIVE,
// and sr.CompatNone skips the library's rule but not the registry's. An
// incompatible schema is refused with ErrIncompatibleSchema, naming the
// version and the field, before it is registered; so is one the registry
// itself refuses (HTTP 409). A registry that answers 404 (or another 4xx but
// 401, 403, 408 and 429) for both levels has none, and compat alone applies.
// When the level cannot be read otherwise (no answer, a 5xx, an auth
// failure), New fails with ErrRegistryUnavailable rather than register a
// schema it could not check.
func New[V any](ctx context.Context, client *sr.Client, subject, schema string, compat Compatibility) (*Codec[V], error) {
	reader, err := avro.Parse(schema)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSchema, err)
	}
	lib, err := ruleOf(compat)
	if err != nil {
		return nil, err
	}
	c, err := newCodec[V](client, subject, reader)
	if err != nil {
		return nil, err
	}
	// Register the schema as written (whitespace removed), not reader.String():
	// that is Avro's canonical form, which drops field defaults, so a registry
	// that checks compatibility (Confluent's, Apicurio's) would see v2's new
	// optional field without its default and refuse it as incompatible.
	want := sr.Schema{Schema: compactJSON(schema), Type: sr.TypeAvro}

	// Already registered (any version): use its ID as it is.
	if ss, err := client.LookupSchema(ctx, subject, want); err == nil {
		return c.withID(ss.ID), nil
	} else if !isNotFound(err) {
		return nil, fmt.Errorf("serde: look up schema under subject %q: %w", subject, err)
	}

	r := lib
	// Nothing is stricter than FULL_TRANSITIVE: then the registry's level
	// need not be read (a principal may lack the right to read it).
	var level Compatibility
	var ok bool
	if lib != (rule{backward: reachAll, forward: reachAll}) {
		if level, ok, err = registryLevel(ctx, client, subject); err != nil {
			return nil, err
		}
	}
	if ok {
		reg, err := ruleOf(level)
		if err != nil {
			return nil, fmt.Errorf("serde: the registry's compatibility level for subject %q: %w", subject, err)
		}
		r = lib.stricter(reg)
	}
	if err := checkCompatible(ctx, client, subject, reader, r); err != nil {
		return nil, err
	}
	ss, err := client.CreateSchema(ctx, subject, want)
	if isConflict(err) {
		return nil, fmt.Errorf("%w: the registry refused it under subject %q: %w", ErrIncompatibleSchema, subject, err)
	}
	if err != nil {
		return nil, fmt.Errorf("serde: register schema under subject %q: %w", subject, err)
	}
	return c.withID(ss.ID), nil
}

// newCodec checks V against reader and plans Encode's checks.
func newCodec[V any](client *sr.Client, subject string, reader avro.Schema) (*Codec[V], error) {
	t := reflect.TypeFor[V]()
	c := &Codec[V]{client: client, subject: subject, reader: reader, walk: walkable(t)}
	var err error
	switch {
	case t.Kind() == reflect.Struct && deref(reader).Type() == avro.Record:
		c.mode = encodeStruct
		c.check, err = plan(reader, t)
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct && deref(reader).Type() == avro.Record:
		c.mode = encodeElem
		c.check, err = plan(reader, t.Elem())
		var te *TypeError
		if errors.As(err, &te) {
			te.GoType = t
		}
	default:
		c.mode = encodeCopy
		c.check, err = plan(reader, t)
	}
	if err != nil {
		return nil, err
	}
	if c.check == nil {
		c.mode = encodeDirect
	}
	return c, nil
}

// withID sets the ID of the reader schema, which Encode writes.
func (c *Codec[V]) withID(id int) *Codec[V] {
	var h sr.ConfluentHeader
	c.id = id
	c.header, _ = h.AppendEncode(nil, id, nil) // never fails
	m := map[int]writerSchema{id: {resolved: c.reader, walk: c.walker(c.reader)}}
	c.decoders.Store(&m)
	return c
}

// walker returns Check's fast path for bodies written with writer, nil if
// there is none (see walker and walkable).
func (c *Codec[V]) walker(writer avro.Schema) *walker {
	if !c.walk {
		return nil
	}
	return newWalker(c.reader, writer)
}

// ID returns the registry ID of the codec's reader schema, the ID Encode writes.
func (c *Codec[V]) ID() int { return c.id }

// Schema returns the reader schema.
func (c *Codec[V]) Schema() avro.Schema { return c.reader }

// Encode returns v in the Confluent wire format under the reader schema. A
// value that does not fit the schema returns ErrInvalidValue naming the
// field, and nothing is encoded: a number outside its Avro type's range (a
// Go int beyond int32 into an Avro int, a time.Duration beyond int32
// milliseconds into time-millis) is refused, never cut; so is what
// hamba/avro itself refuses (an enum string that is not a symbol, a missing
// field of a map[string]any). Time values are cut to their logical type's
// unit (a time.Time to milliseconds for timestamp-millis), as Avro defines
// them. The returned slice is owned by the caller.
func (c *Codec[V]) Encode(v V) ([]byte, error) {
	var (
		body []byte
		err  error
	)
	switch c.mode {
	case encodeDirect:
		body, err = avro.Marshal(c.reader, v)
	case encodeStruct:
		body, err = c.marshalStruct(v)
		if err != nil {
			return nil, err
		}
	case encodeElem:
		if p := *(*unsafe.Pointer)(unsafe.Pointer(&v)); p != nil {
			if fe := c.check(p); fe != nil {
				return nil, fe.err()
			}
		}
		body, err = avro.Marshal(c.reader, v)
	default:
		p := new(V)
		*p = v
		if fe := c.check(unsafe.Pointer(p)); fe != nil {
			return nil, fe.err()
		}
		body, err = avro.Marshal(c.reader, v)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidValue, err)
	}
	out := make([]byte, 0, len(c.header)+len(body))
	out = append(out, c.header...)
	return append(out, body...), nil
}

// marshalStruct checks and encodes a struct v through a pointer to it: the
// one allocation boxing v for Marshal would make anyway. It is apart from
// Encode so that Encode's own v stays off the heap. A value that does not
// fit returns ErrInvalidValue.
func (c *Codec[V]) marshalStruct(v V) ([]byte, error) {
	p := &v
	if fe := c.check(unsafe.Pointer(p)); fe != nil {
		return nil, fe.err()
	}
	body, err := avro.Marshal(c.reader, p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidValue, err)
	}
	return body, nil
}

// Decode decodes b, written with any schema registered in the codec's
// registry, into v. The writer schema is fetched once per ID and resolved
// against the reader schema, so fields added with defaults are filled in and
// removed fields are skipped. Errors: ErrMalformed for bytes that are not a
// framed Avro value; ErrUnknownSchema (in a *SchemaError) for a schema ID the
// registry does not have, with ErrRegistryUnavailable when it could not be
// asked; ErrUnresolvableSchema (in a *SchemaError) for a writer schema that
// cannot be resolved against the reader schema, naming the reader field and
// the cause. On error v may be partly written (decoding goes field by field),
// so pass a fresh value when that matters.
func (c *Codec[V]) Decode(ctx context.Context, b []byte, v *V) error {
	ws, id, body, err := c.framed(ctx, b)
	if err != nil {
		return err
	}
	return decodeBody(ws.resolved, id, body, v) // not avro.Unmarshal: see reader.go
}

// framed splits b into its writer schema (resolved, fetched the first time)
// and its Avro body.
func (c *Codec[V]) framed(ctx context.Context, b []byte) (writerSchema, int, []byte, error) {
	id, body, err := (*sr.ConfluentHeader)(nil).DecodeID(b)
	if err != nil {
		return writerSchema{}, 0, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	ws, err := c.writer(ctx, id)
	return ws, id, body, err
}

// Check reports whether b would decode, with the same verdict and error as
// Decode. Restores use it to find poison records. When the writer and
// reader schemas are made of records, primitives without a logical type,
// arrays, maps and unions whose branches pair up one to one, and V is a
// struct of plain Go kinds (booleans, signed integers, floats, strings,
// byte slices, pointers, slices, arrays, string-keyed maps, structs: no
// type that parses text such as time.Time or netip.Addr, no interface), it
// walks the body's bytes without building a value, a fifth to a sixth of a
// decode's cost (BenchmarkCheck); whatever the walk does not pass, and every
// other schema or V (a timestamp-millis field, say), it decodes in full into
// a scratch value, as Decode does.
func (c *Codec[V]) Check(ctx context.Context, b []byte) error {
	ws, id, body, err := c.framed(ctx, b)
	if err != nil {
		return err
	}
	if ws.walk != nil && ws.walk.pass(body) {
		return nil
	}
	var v V
	return decodeBody(ws.resolved, id, body, &v)
}

// writer returns the resolved schema for writer ID id, fetching it from the
// registry the first time.
func (c *Codec[V]) writer(ctx context.Context, id int) (writerSchema, error) {
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
		return writerSchema{}, &SchemaError{Subject: c.subject, ID: id, Err: ErrUnknownSchema, Cause: err}
	}
	if ss.Type != sr.TypeAvro {
		return writerSchema{}, &SchemaError{Subject: c.subject, ID: id, Err: ErrUnknownSchema, Cause: fmt.Errorf("schema type %v is not Avro", ss.Type)}
	}
	w, err := avro.Parse(ss.Schema)
	if err != nil {
		return writerSchema{}, &SchemaError{Subject: c.subject, ID: id, Err: ErrUnknownSchema, Cause: err}
	}
	resolved, err := avro.NewSchemaCompatibility().Resolve(c.reader, w)
	if err != nil {
		why := explain(c.reader, w, fmt.Sprintf("writer schema %d", id), err)
		return writerSchema{}, &SchemaError{Subject: c.subject, ID: id, Err: ErrUnresolvableSchema,
			Cause: fmt.Errorf("%s (reader schema %d)", why, c.id)}
	}
	next := make(map[int]writerSchema, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	ws := writerSchema{resolved: resolved, walk: c.walker(w)}
	next[id] = ws
	c.decoders.Store(&next)
	return ws, nil
}
