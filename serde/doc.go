// Package serde turns values into the bytes a compactkv topic holds and back:
// Avro bodies (github.com/hamba/avro/v2) behind the Confluent wire-format
// header (magic byte 0, 4-byte big-endian schema ID; sr.ConfluentHeader), with
// schemas kept in a Confluent-compatible schema registry (github.com/twmb/franz-go/pkg/sr).
//
// # Basics
//
// New registers the reader schema under a subject (TopicNameStrategy:
// "<topic>-value") after checking it locally against the latest registered
// version, then returns a Codec. Codec.Encode frames a value with that
// schema's ID; Codec.Decode reads bytes written with any registered schema
// version, resolving the writer schema against the reader schema once per
// writer ID and caching the result.
//
// # Durability
//
// The codec keeps nothing on disk. Writer schemas it has fetched are cached in
// memory for its lifetime, so bytes whose schema IDs it has already seen keep
// decoding while the registry is unreachable.
//
// # Caveats
//
// Only Avro is supported. Compatibility is checked on the client even when the
// registry does not enforce it; a registry that does enforce it may still
// refuse a schema this package accepts (for example under a transitive level
// set on the server).
package serde
