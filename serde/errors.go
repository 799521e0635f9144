package serde

import (
	"errors"
	"fmt"
	"reflect"
)

var (
	// ErrIncompatibleSchema is returned (wrapped) by New when the schema to
	// register fails the compatibility check against a registered version:
	// the local check (under the stricter of the library's and the registry's
	// levels), or the registry's own (HTTP 409).
	ErrIncompatibleSchema = errors.New("serde: schema is incompatible with the registered schema")

	// ErrInvalidSchema is returned (wrapped) when a schema is not valid Avro.
	ErrInvalidSchema = errors.New("serde: invalid Avro schema")

	// ErrTypeMismatch is returned (wrapped, in a *TypeError) by New when the
	// Go type V cannot hold the reader schema: a schema field without a
	// default has no field in V, a field's Go type cannot hold every value of
	// its Avro type, or V has an exported field the schema does not have (and
	// no avro:"-" tag). Nothing is registered then.
	ErrTypeMismatch = errors.New("serde: Go type does not match the schema")

	// ErrInvalidValue is returned (wrapped) by Encode when a value does not fit
	// the schema, naming the field: a number out of the Avro type's range, an
	// enum string that is not a symbol, a missing required key of a map. Nothing
	// is produced for such a value.
	ErrInvalidValue = errors.New("serde: value does not fit the schema")

	// ErrMalformed is returned (wrapped) by Decode and Check for bytes that are
	// not a Confluent-framed Avro value: too short, wrong magic byte, or a body
	// that does not decode with its writer schema.
	ErrMalformed = errors.New("serde: malformed value")

	// ErrUnknownSchema is returned (wrapped, in a *SchemaError) by Decode and
	// Check when the schema ID in a value cannot be had from the registry: the
	// registry does not have it (or could not be asked: see
	// ErrRegistryUnavailable), or it is not a valid Avro schema.
	ErrUnknownSchema = errors.New("serde: unknown writer schema")

	// ErrUnresolvableSchema is returned (wrapped, in a *SchemaError) by Decode
	// and Check when the registry has the writer schema of a value but it
	// cannot be resolved against the reader schema: the two are incompatible
	// (for example the reader has a field without a default that the writer
	// lacks). The message names the reader field, the writer schema ID and
	// the cause. It says nothing wrong about the bytes: a reader with another
	// schema may read them.
	ErrUnresolvableSchema = errors.New("serde: writer schema cannot be resolved against the reader schema")

	// ErrRegistryUnavailable is returned (wrapped) when the registry could not
	// be asked: a network error, a timeout, an auth failure, a 5xx. From Decode
	// and Check it comes together with ErrUnknownSchema; unlike a schema the
	// registry says it does not have, this says nothing about the bytes: try
	// again later. New returns it when it cannot read the subject's
	// compatibility level.
	ErrRegistryUnavailable = errors.New("serde: schema registry unavailable")
)

// SchemaError says which schema ID failed and why. It unwraps to one of the
// sentinels above and to the underlying cause.
type SchemaError struct {
	Subject string // the registry subject, "" if not known
	ID      int    // the schema ID the record names
	Err     error  // sentinel
	Cause   error
}

// Error names the sentinel, the subject, the schema ID and the cause.
func (e *SchemaError) Error() string {
	return fmt.Sprintf("%v (subject %q, schema id %d): %v", e.Err, e.Subject, e.ID, e.Cause)
}

// Unwrap returns the sentinel and the cause.
func (e *SchemaError) Unwrap() []error { return []error{e.Err, e.Cause} }

// TypeError says where a Go type and a reader schema disagree. It unwraps to
// ErrTypeMismatch.
type TypeError struct {
	GoType reflect.Type // the codec's V
	// Field is the path of the schema field, "address.zip"; "[]" stands for
	// the items of an array or the values of a map ("tags[]"). Empty for V
	// itself.
	Field string
	// Problem says what is wrong: "Avro int into Go string", ...
	Problem string
	// Extra is true when the Go field is not in the schema, rather than of a
	// type that cannot hold it.
	Extra bool
}

// Error names the Go type, the field (if any) and the problem.
func (e *TypeError) Error() string {
	verb := "cannot hold the schema"
	if e.Extra {
		verb = "does not match the schema"
	}
	if e.Field == "" {
		return fmt.Sprintf("serde: Go type %v %s: %s", e.GoType, verb, e.Problem)
	}
	return fmt.Sprintf("serde: Go type %v %s: field %q: %s", e.GoType, verb, e.Field, e.Problem)
}

// Unwrap returns ErrTypeMismatch.
func (e *TypeError) Unwrap() error { return ErrTypeMismatch }
