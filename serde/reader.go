package serde

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hamba/avro/v2"
)

// readers pools avro readers: each carries a slab that short strings and
// bytes are carved from, so reusing them saves an allocation per decode.
// Values decoded earlier keep their slices (the slab only moves forward).
var readers = sync.Pool{New: func() any { return avro.NewReader(nil, 0) }}

// decodeBody decodes an Avro body with schema into v. Unlike avro.Unmarshal,
// which takes running out of bytes for success (a truncated body would decode
// into zero values without an error), it reports a body that ends early as
// ErrMalformed. Bytes after a complete value are ignored, as Confluent's
// deserializers do.
func decodeBody(schema avro.Schema, id int, body []byte, v any) error {
	r := readers.Get().(*avro.Reader)
	r.Reset(body)
	r.Error = nil
	r.ReadVal(schema, v)
	err := r.Error
	r.Reset(nil)
	r.Error = nil
	readers.Put(r)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: schema id %d: body ends early (truncated after %d bytes)", ErrMalformed, id, len(body))
	default:
		return fmt.Errorf("%w: schema id %d: %v", ErrMalformed, id, err)
	}
}
