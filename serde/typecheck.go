package serde

import (
	"encoding"
	"fmt"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/hamba/avro/v2"
)

// This file holds what New finds out, once per Go type, by reflection on V
// against the reader schema: whether V can hold every value of the schema
// (the rules are hamba/avro's, made strict where hamba/avro would lose data),
// and the plan of range checks Encode runs before it encodes (valuecheck.go).

var (
	timeType     = reflect.TypeFor[time.Time]()
	durationType = reflect.TypeFor[time.Duration]()
	ratType      = reflect.TypeFor[big.Rat]()
	logicalDur   = reflect.TypeFor[avro.LogicalDuration]()
	textMarsh    = reflect.TypeFor[encoding.TextMarshaler]()
	textUnmarsh  = reflect.TypeFor[encoding.TextUnmarshaler]()
	unionConv    = reflect.TypeFor[avro.UnionConverter]()
	anyMapType   = reflect.TypeFor[map[string]any]()
)

// A check looks at the Go value p points to (of the type it was planned for)
// and reports the first part of it that does not fit the schema. A nil check
// means nothing there can fail to fit.
type check func(p unsafe.Pointer) *fieldError

// planner walks a reader schema and a Go type together.
type planner struct {
	root reflect.Type // V, for errors
	// lenient plans what it can and reports no mismatch: for types met only
	// at run time inside an interface, and for a V that is not a struct.
	lenient bool
	// building holds the records being planned, so that a recursive schema
	// (a record holding itself through a union or an array) ends.
	building map[planKey]*check
}

type planKey struct {
	name string
	t    reflect.Type
}

// plan returns the checks Encode must run for a value of type t under schema
// s, or a *TypeError when t cannot hold s. For a t that is neither a struct
// nor a pointer to one, it never fails: the value is left to hamba/avro, as
// before, with range checks where they can be planned.
func plan(s avro.Schema, t reflect.Type) (check, error) {
	strict := t.Kind() == reflect.Struct || t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct
	p := &planner{root: t, lenient: !strict, building: map[planKey]*check{}}
	return p.build(s, t, "")
}

func (b *planner) mismatch(path string, problem string, args ...any) (check, error) {
	if b.lenient {
		return nil, nil
	}
	return nil, &TypeError{GoType: b.root, Field: path, Problem: fmt.Sprintf(problem, args...)}
}

// into is the usual mismatch: "Avro int into Go string", and a hint.
func (b *planner) into(path string, s avro.Schema, t reflect.Type, hint string) (check, error) {
	if hint != "" {
		hint = " (" + hint + ")"
	}
	return b.mismatch(path, "Avro %s into Go %v%s", avroName(s), t, hint)
}

func deref(s avro.Schema) avro.Schema {
	if r, ok := s.(*avro.RefSchema); ok {
		return r.Schema()
	}
	return s
}

func logical(s avro.Schema) avro.LogicalType {
	if ls, ok := s.(avro.LogicalTypeSchema); ok && ls.Logical() != nil {
		return ls.Logical().Type()
	}
	return ""
}

// implementsText reports whether hamba/avro encodes and decodes t as text.
func implementsText(t reflect.Type) bool {
	return t.Implements(textMarsh) &&
		(t.Implements(textUnmarsh) || reflect.PointerTo(t).Implements(textUnmarsh))
}

func (b *planner) build(s avro.Schema, t reflect.Type, path string) (check, error) {
	s = deref(s)
	if t.Kind() == reflect.Interface {
		if t.NumMethod() > 0 {
			return b.into(path, s, t, "use any")
		}
		if !holdsInt(s, map[string]bool{}) {
			return nil, nil
		}
		return func(p unsafe.Pointer) *fieldError { return checkAny(s, *(*any)(p)) }, nil
	}
	switch s.Type() {
	case avro.String, avro.Enum:
		if t.Kind() == reflect.String || implementsText(t) {
			return nil, nil
		}
		return b.into(path, s, t, "use string")
	case avro.Null:
		return nil, nil
	case avro.Boolean:
		if t.Kind() == reflect.Bool {
			return nil, nil
		}
		return b.into(path, s, t, "use bool")
	case avro.Int:
		return b.buildInt(s, t, path)
	case avro.Long:
		return b.buildLong(s, t, path)
	case avro.Float:
		if t.Kind() == reflect.Float32 {
			return nil, nil
		}
		return b.into(path, s, t, "use float32")
	case avro.Double:
		if t.Kind() == reflect.Float64 {
			return nil, nil
		}
		return b.into(path, s, t, "use float64")
	case avro.Bytes:
		switch {
		case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
			return nil, nil
		case logical(s) == avro.Decimal && (t.ConvertibleTo(ratType) || t.Kind() == reflect.Pointer && t.Elem().ConvertibleTo(ratType)):
			return nil, nil
		}
		return b.into(path, s, t, "use []byte")
	case avro.Fixed:
		return b.buildFixed(s.(*avro.FixedSchema), t, path)
	case avro.Array:
		return b.buildArray(s.(*avro.ArraySchema), t, path)
	case avro.Map:
		return b.buildMap(s.(*avro.MapSchema), t, path)
	case avro.Union:
		return b.buildUnion(s.(*avro.UnionSchema), t, path)
	case avro.Record:
		return b.buildRecord(s.(*avro.RecordSchema), t, path)
	}
	return b.into(path, s, t, "")
}

// buildInt: an Avro int is a 32-bit signed integer. Go int32 and int hold
// every one; a Go int may hold more, so values are range-checked. Narrower
// types would truncate what other writers wrote, so they are refused.
func (b *planner) buildInt(s avro.Schema, t reflect.Type, path string) (check, error) {
	lt := logical(s)
	switch t.Kind() {
	case reflect.Int32:
		return nil, nil
	case reflect.Int:
		if strconv.IntSize == 32 {
			return nil, nil
		}
		return checkInt32, nil
	case reflect.Int64:
		if lt == avro.TimeMillis && t == durationType {
			return checkMillis, nil
		}
		if lt == avro.TimeMillis {
			return b.into(path, s, t, "use time.Duration: hamba/avro takes an int64 here for nanoseconds")
		}
		return b.into(path, s, t, "use int32 or int")
	case reflect.Int8, reflect.Int16, reflect.Uint8, reflect.Uint16:
		return b.mismatch(path, "Avro %s into Go %v: %v cannot hold every Avro int (use int32 or int)", avroName(s), t, t)
	case reflect.Struct:
		if lt == avro.Date && t.ConvertibleTo(timeType) {
			return nil, nil
		}
	}
	return b.into(path, s, t, "use int32 or int")
}

// buildLong: an Avro long is a 64-bit signed integer; only Go int64 (and int
// where it has 64 bits) holds every one, so no value needs a check.
func (b *planner) buildLong(s avro.Schema, t reflect.Type, path string) (check, error) {
	lt := logical(s)
	switch t.Kind() {
	case reflect.Int64:
		switch {
		case t == durationType && (lt == avro.TimestampMillis || lt == avro.TimestampMicros):
			return b.into(path, s, t, "use time.Time")
		case lt == avro.TimeMicros && t != durationType:
			return b.into(path, s, t, "use time.Duration: hamba/avro takes an int64 here for nanoseconds")
		}
		return nil, nil
	case reflect.Int:
		if strconv.IntSize == 64 {
			return nil, nil
		}
	case reflect.Int32, reflect.Uint32:
		return b.mismatch(path, "Avro %s into Go %v: %v cannot hold every Avro long (use int64)", avroName(s), t, t)
	case reflect.Struct:
		switch lt {
		case avro.TimestampMillis, avro.TimestampMicros, avro.LocalTimestampMillis, avro.LocalTimestampMicros:
			if t.ConvertibleTo(timeType) {
				return nil, nil
			}
		}
	}
	return b.into(path, s, t, "use int64")
}

func (b *planner) buildFixed(s *avro.FixedSchema, t reflect.Type, path string) (check, error) {
	lt := logical(s)
	switch {
	case t.Kind() == reflect.Array && t.Elem().Kind() == reflect.Uint8 && t.Len() == s.Size():
		return nil, nil
	case t.Kind() == reflect.Uint64 && s.Size() == 8:
		return nil, nil
	case lt == avro.Decimal && t.Kind() == reflect.Pointer && t.Elem().ConvertibleTo(ratType):
		return nil, nil
	case lt == avro.Duration && t.ConvertibleTo(logicalDur):
		return nil, nil
	}
	return b.into(path, s, t, fmt.Sprintf("use [%d]byte", s.Size()))
}

func (b *planner) buildArray(s *avro.ArraySchema, t reflect.Type, path string) (check, error) {
	if t.Kind() != reflect.Slice {
		return b.into(path, s, t, "use a slice")
	}
	elem, err := b.build(s.Items(), t.Elem(), path+"[]")
	if err != nil || elem == nil {
		return nil, err
	}
	return sliceCheck(t.Elem(), elem, leafOf(s, t) == leafIntSlice), nil
}

func (b *planner) buildMap(s *avro.MapSchema, t reflect.Type, path string) (check, error) {
	if t.Kind() != reflect.Map || t.Key().Kind() != reflect.String && !implementsText(t.Key()) {
		return b.into(path, s, t, "use a map with string keys")
	}
	elem, err := b.build(s.Values(), t.Elem(), path+"[]")
	if err != nil || elem == nil {
		return nil, err
	}
	return mapCheck(t, elem), nil
}

// buildUnion accepts what hamba/avro both encodes and decodes: a pointer (or
// a slice) for a nullable union, map[string]any or any for any union, and
// types that implement avro.UnionConverter.
func (b *planner) buildUnion(s *avro.UnionSchema, t reflect.Type, path string) (check, error) {
	switch {
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String && t.Elem().Kind() == reflect.Interface && t.Elem().NumMethod() == 0:
		if !holdsInt(s, map[string]bool{}) {
			return nil, nil
		}
		return anyMapCheck(t, s), nil
	case t.Kind() == reflect.Pointer && t.Implements(unionConv):
		return nil, nil
	}
	if !s.Nullable() {
		return b.into(path, s, t, "use map[string]any or any")
	}
	_, typeIdx := s.Indices()
	inner := s.Types()[typeIdx]
	switch t.Kind() {
	case reflect.Pointer:
		elem, err := b.build(inner, t.Elem(), path)
		if err != nil || elem == nil {
			return nil, err
		}
		return ptrCheck(elem), nil
	case reflect.Slice:
		return b.build(inner, t, path)
	}
	return b.into(path, s, t, "use *"+t.String())
}

// leafOf says whether the check of a Go t under s is one of the common
// ones a struct's check does inline: a Go int into an Avro int, held
// directly, behind a pointer (a nullable union) or in a slice (an array).
func leafOf(s avro.Schema, t reflect.Type) leaf {
	if strconv.IntSize != 64 {
		return leafNone
	}
	isInt := func(s avro.Schema, t reflect.Type) bool {
		return deref(s).Type() == avro.Int && t.Kind() == reflect.Int
	}
	switch s := deref(s).(type) {
	case *avro.PrimitiveSchema:
		if isInt(s, t) {
			return leafInt
		}
	case *avro.UnionSchema:
		if s.Nullable() && t.Kind() == reflect.Pointer {
			_, i := s.Indices()
			if isInt(s.Types()[i], t.Elem()) {
				return leafPtrInt
			}
		}
	case *avro.ArraySchema:
		if t.Kind() == reflect.Slice && isInt(s.Items(), t.Elem()) {
			return leafIntSlice
		}
	}
	return leafNone
}

// holdsInt reports whether a value of schema s can hold an Avro int, the
// only type a value held in an interface can overflow (a Go int into it).
func holdsInt(s avro.Schema, seen map[string]bool) bool {
	s = deref(s)
	switch s := s.(type) {
	case *avro.PrimitiveSchema:
		return s.Type() == avro.Int
	case *avro.ArraySchema:
		return holdsInt(s.Items(), seen)
	case *avro.MapSchema:
		return holdsInt(s.Values(), seen)
	case *avro.UnionSchema:
		for _, u := range s.Types() {
			if holdsInt(u, seen) {
				return true
			}
		}
	case *avro.RecordSchema:
		if seen[s.FullName()] {
			return false
		}
		seen[s.FullName()] = true
		for _, f := range s.Fields() {
			if holdsInt(f.Type(), seen) {
				return true
			}
		}
	}
	return false
}

// avroName describes a schema for messages: "int", "long (timestamp-millis)",
// "record com.example.Address", "array of int", "union [null, int]".
func avroName(s avro.Schema) string {
	s = deref(s)
	switch s := s.(type) {
	case *avro.RecordSchema:
		return "record " + s.FullName()
	case *avro.EnumSchema:
		return "enum " + s.FullName()
	case *avro.FixedSchema:
		n := fmt.Sprintf("fixed %s (%d bytes)", s.FullName(), s.Size())
		if lt := logical(s); lt != "" {
			n += " " + string(lt)
		}
		return n
	case *avro.ArraySchema:
		return "array of " + avroName(s.Items())
	case *avro.MapSchema:
		return "map of " + avroName(s.Values())
	case *avro.UnionSchema:
		names := make([]string, len(s.Types()))
		for i, u := range s.Types() {
			names[i] = avroName(u)
		}
		return "union [" + strings.Join(names, ", ") + "]"
	}
	if lt := logical(s); lt != "" {
		return fmt.Sprintf("%s (%s)", s.Type(), lt)
	}
	return string(s.Type())
}
