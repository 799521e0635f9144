package serde

import (
	"errors"
	"fmt"
)

var (
	// ErrIncompatibleSchema is returned (wrapped) by New when the schema to
	// register fails the local compatibility check against a registered version.
	ErrIncompatibleSchema = errors.New("serde: schema is incompatible with the registered schema")

	// ErrInvalidSchema is returned (wrapped) when a schema is not valid Avro.
	ErrInvalidSchema = errors.New("serde: invalid Avro schema")

	// ErrInvalidValue is returned (wrapped) by Encode when a value does not fit
	// the schema. Nothing is produced for such a value.
	ErrInvalidValue = errors.New("serde: value does not fit the schema")

	// ErrMalformed is returned (wrapped) by Decode and Check for bytes that are
	// not a Confluent-framed Avro value: too short, wrong magic byte, or a body
	// that does not decode with its writer schema.
	ErrMalformed = errors.New("serde: malformed value")

	// ErrUnknownSchema is returned (wrapped) when a schema ID in a value cannot
	// be fetched from the registry or resolved against the reader schema.
	ErrUnknownSchema = errors.New("serde: unknown or unresolvable writer schema")

	// ErrRegistryUnavailable is returned (wrapped, together with
	// ErrUnknownSchema) when the registry could not be asked for a writer
	// schema: a network error, a timeout, an auth failure, a 5xx. Unlike a
	// schema the registry says it does not have, this says nothing about the
	// bytes: try again later.
	ErrRegistryUnavailable = errors.New("serde: schema registry unavailable")
)

// SchemaError says which schema ID failed and why. It unwraps to one of the
// sentinels above and to the underlying cause.
type SchemaError struct {
	Subject string
	ID      int
	Err     error // sentinel
	Cause   error
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("%v (subject %q, schema id %d): %v", e.Err, e.Subject, e.ID, e.Cause)
}

// Unwrap returns the sentinel and the cause.
func (e *SchemaError) Unwrap() []error { return []error{e.Err, e.Cause} }
