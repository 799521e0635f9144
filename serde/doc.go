// Package serde turns values into the bytes a compactkv topic holds and back:
// Avro bodies (github.com/hamba/avro/v2) behind the Confluent wire-format
// header (magic byte 0, 4-byte big-endian schema ID; sr.ConfluentHeader), with
// schemas kept in a Confluent-compatible schema registry (github.com/twmb/franz-go/pkg/sr).
//
// # Basics
//
// New checks that the Go type V can hold the reader schema, checks the
// schema against the versions registered under its subject
// (TopicNameStrategy: "<topic>-value"), registers it, and returns a Codec.
// Codec.Encode frames a value with that schema's ID; Codec.Decode reads bytes
// written with any registered schema version, resolving the writer schema
// against the reader schema once per writer ID and caching the result.
//
// Values are checked on the way in, never cut. New refuses (ErrTypeMismatch,
// naming the field and both types) a struct V with a Go field type that
// cannot hold every value of its Avro type (an int8 for an int, an int32 for
// a long, a float64 for a float, a string for an int), without a field for a
// schema field that has no default, or with an exported field the schema
// does not have (tag it avro:"-" to leave it out). Encode refuses
// (ErrInvalidValue, naming the field, "address.zip" or "scores[2]") a value
// outside its Avro type's range, such as a Go int beyond int32 for an Avro
// int, which hamba/avro would otherwise store truncated. Which fields need
// such a check is worked out once per Go type at New; a type with none (int32
// for int, int64 for long) pays nothing for it in Encode.
//
// The schema is checked under the stricter of the level given to New and
// the registry's own level for the subject (else its global level): two
// levels combine direction by direction, so BACKWARD with FORWARD is FULL and
// anything with FULL_TRANSITIVE is FULL_TRANSITIVE. A writer schema the
// registry has but that does not resolve against the reader schema is
// reported as ErrUnresolvableSchema with its cause ("reader field age has no
// default and writer schema 3 lacks it"); ErrUnknownSchema is kept for IDs
// the registry does not have.
//
// # Durability
//
// The codec keeps nothing on disk. Writer schemas it has fetched are cached in
// memory for its lifetime, so bytes whose schema IDs it has already seen keep
// decoding while the registry is unreachable.
//
// # Caveats
//
// Only Avro is supported. A schema already registered under the subject is
// used without a compatibility check. A registry that enforces a level of its
// own may still refuse a schema this package accepts; that is reported as
// ErrIncompatibleSchema too. Time values are cut to their logical type's unit
// (a time.Time to milliseconds for timestamp-millis), as Avro defines them.
// A V that is not a struct (map[string]any, any) is not checked at New, and
// the ints it holds are checked in Encode by reflection, which costs more
// than a struct's checks.
package serde
