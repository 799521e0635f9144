package serde

import (
	"reflect"
	"unsafe"

	"github.com/hamba/avro/v2"
)

// ValueCheck returns Encode's value checks alone for V against schema (nil
// when V needs none), for BenchmarkValueCheck.
func ValueCheck[V any](schema string) (func(v *V) error, error) {
	s, err := avro.Parse(schema)
	if err != nil {
		return nil, err
	}
	c, err := plan(s, reflect.TypeFor[V]())
	if err != nil || c == nil {
		return nil, err
	}
	return func(v *V) error {
		if fe := c(unsafe.Pointer(v)); fe != nil {
			return fe.err()
		}
		return nil
	}, nil
}
