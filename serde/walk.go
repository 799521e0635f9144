package serde

import (
	"encoding"
	"encoding/binary"
	"reflect"
	"slices"

	"github.com/hamba/avro/v2"
)

// A walker checks an Avro body written with one writer schema by walking
// its bytes, building no value: the fast path of Check, about a tenth of
// the cost of decoding into V (BenchmarkCheck).
//
// It is at least as strict as decoding: it passes a body only if reading it
// against the resolved schema into V cannot fail. It refuses, among others,
// every body the decoder refuses, so a refusal is never the verdict: Check
// then decodes the body in full, and that decides (and words the error).
// The two therefore always agree, which FuzzDecode and FuzzWalk check.
//
// A walker is built only for what it can vouch for: records, the
// primitive types without a logical type, arrays, maps, and unions whose
// writer and reader branches pair up one to one with the same types,
// decoded into a Go type made of plain kinds (walkable). Anything else
// (enums, fixed, logical types, type promotions, a union on one side only,
// recursion, Go types that parse text or convert unions) gets no walker,
// and Check decodes.
type walker struct {
	kind  avro.Type
	items *walker   // array items, map values
	elems []*walker // record fields in writer order, union branches
}

const (
	// maxWalkBytes bounds strings and bytes the walker passes: longer ones
	// are left to the decoder (whose own bound is 1 MiB by default).
	maxWalkBytes = 1 << 16
	// maxWalkItems bounds the items of one array or map the walker passes.
	maxWalkItems = 1 << 16
	// maxWalkDepth bounds the nesting newWalker follows.
	maxWalkDepth = 16
)

// newWalker returns the walker of bodies written with writer and read with
// reader, or nil if it cannot vouch for them (see walker). It looks at the
// schemas only: whether the Go type decoded into can fail on a value is
// plainGo's to say.
func newWalker(reader, writer avro.Schema) *walker {
	return pairWalker(reader, writer, 0)
}

var (
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	unionConverter  = reflect.TypeFor[avro.UnionConverter]()
)

// walkable reports whether decoding into t can fail only on the bytes,
// never on the value they hold, so that a walk of the bytes can stand for a
// decode: t is a struct (or a pointer to one) whose fields, all the way
// down, are booleans, signed integers, floats, strings, byte slices,
// pointers, slices, arrays, maps with string keys and structs; no type that
// parses text (encoding.TextUnmarshaler: time.Time, netip.Addr, ...) or
// converts unions (avro.UnionConverter), no interfaces, no unsigned
// integers. Which Go types may hold which Avro types is Open's type check's
// to enforce (typecheck.go).
func walkable(t reflect.Type) bool {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct && plainGo(t, map[reflect.Type]bool{})
}

func plainGo(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return true // a recursive type: judged where it began
	}
	seen[t] = true
	for _, i := range []reflect.Type{textUnmarshaler, unionConverter} {
		if t.Implements(i) || reflect.PointerTo(t).Implements(i) {
			return false
		}
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Float32, reflect.Float64, reflect.String:
		return true
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return t.Elem().Kind() == reflect.Uint8 || plainGo(t.Elem(), seen)
	case reflect.Map:
		return t.Key().Kind() == reflect.String && plainGo(t.Key(), seen) && plainGo(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if !plainGo(t.Field(i).Type, seen) {
				return false
			}
		}
		return true
	}
	return false
}

func pairWalker(r, w avro.Schema, depth int) *walker {
	if depth > maxWalkDepth || r == nil || w == nil {
		return nil
	}
	if r.Type() == avro.Ref || w.Type() == avro.Ref {
		return nil // named types used again, possibly recursively: decode
	}
	if r.Type() != w.Type() {
		return nil // promotions and unions on one side: decode
	}
	switch w.Type() {
	case avro.Null:
		return &walker{kind: avro.Null}
	case avro.Boolean, avro.Int, avro.Long, avro.Float, avro.Double, avro.String, avro.Bytes:
		wp, ok1 := w.(*avro.PrimitiveSchema)
		rp, ok2 := r.(*avro.PrimitiveSchema)
		if !ok1 || !ok2 || wp.Logical() != nil || rp.Logical() != nil {
			return nil
		}
		return &walker{kind: w.Type()}
	case avro.Array:
		items := pairWalker(r.(*avro.ArraySchema).Items(), w.(*avro.ArraySchema).Items(), depth+1)
		if items == nil {
			return nil
		}
		return &walker{kind: avro.Array, items: items}
	case avro.Map:
		vals := pairWalker(r.(*avro.MapSchema).Values(), w.(*avro.MapSchema).Values(), depth+1)
		if vals == nil {
			return nil
		}
		return &walker{kind: avro.Map, items: vals}
	case avro.Union:
		rt, wt := r.(*avro.UnionSchema).Types(), w.(*avro.UnionSchema).Types()
		if len(rt) != len(wt) {
			return nil
		}
		out := &walker{kind: avro.Union, elems: make([]*walker, len(wt))}
		for i := range wt {
			// The same branch in the same place on both sides, so that the
			// resolved union maps writer branch i to reader branch i.
			if out.elems[i] = pairWalker(rt[i], wt[i], depth+1); out.elems[i] == nil {
				return nil
			}
		}
		return out
	case avro.Record:
		rr, wr := r.(*avro.RecordSchema), w.(*avro.RecordSchema)
		if rr.FullName() != wr.FullName() {
			return nil // renamed (aliases), or union branches in another order: decode
		}
		out := &walker{kind: avro.Record, elems: make([]*walker, 0, len(wr.Fields()))}
		for _, wf := range wr.Fields() {
			var e *walker
			if rf := matchField(rr.Fields(), wf); rf != nil {
				e = pairWalker(rf.Type(), wf.Type(), depth+1)
			} else {
				// A field the reader does not have: skipped by the decoder,
				// walked strictly here (stricter than skipping is allowed).
				e = pairWalker(wf.Type(), wf.Type(), depth+1)
			}
			if e == nil {
				return nil
			}
			out.elems = append(out.elems, e)
		}
		return out
	}
	return nil
}

// matchField finds the reader field a writer field resolves to, as the
// schema resolution does: the same name, or a reader alias naming it.
func matchField(rfs []*avro.Field, wf *avro.Field) *avro.Field {
	for _, rf := range rfs {
		if rf.Name() == wf.Name() || slices.Contains(rf.Aliases(), wf.Name()) {
			return rf
		}
	}
	return nil
}

// pass reports whether body is one whole value for w (bytes after it are
// ignored, as decoding ignores them).
func (w *walker) pass(body []byte) bool {
	_, ok := w.walk(body)
	return ok
}

// walk checks one value at the start of b and returns what follows it.
func (w *walker) walk(b []byte) ([]byte, bool) {
	switch w.kind {
	case avro.Null:
		return b, true
	case avro.Boolean:
		if len(b) == 0 || b[0] > 1 {
			return nil, false
		}
		return b[1:], true
	case avro.Int:
		return skipVarint(b, 5)
	case avro.Long:
		return skipVarint(b, 10)
	case avro.Float:
		return skipN(b, 4)
	case avro.Double:
		return skipN(b, 8)
	case avro.String, avro.Bytes:
		n, rest, ok := readLong(b)
		if !ok || n < 0 || n > maxWalkBytes {
			return nil, false
		}
		return skipN(rest, int(n))
	case avro.Record:
		for _, e := range w.elems {
			var ok bool
			if b, ok = e.walk(b); !ok {
				return nil, false
			}
		}
		return b, true
	case avro.Union:
		i, rest, ok := readInt(b) // the decoder reads a union's index as an int
		if !ok || i < 0 || i >= int64(len(w.elems)) {
			return nil, false
		}
		return w.elems[i].walk(rest)
	case avro.Array, avro.Map:
		return w.walkBlocks(b)
	}
	return nil, false
}

// walkBlocks checks the blocks of an array or map: a count (negative: its
// absolute value, then the block's size in bytes, which must then be the
// items' size), that many items (map entries: a string key, then the
// value), up to a block of count 0.
func (w *walker) walkBlocks(b []byte) ([]byte, bool) {
	total := int64(0)
	for {
		n, rest, ok := readLong(b)
		if !ok {
			return nil, false
		}
		b = rest
		if n == 0 {
			return b, true
		}
		size := int64(0)
		if n < 0 {
			if n = -n; n < 0 {
				return nil, false
			}
			if size, b, ok = readLong(b); !ok {
				return nil, false
			}
		}
		if total += n; total > maxWalkItems {
			return nil, false
		}
		// Reading the block ignores its size; skipping it (a field the
		// reader lacks) skips size bytes when size > 0. Pass only a size
		// that agrees with the items, so both land where the walk does.
		start := len(b)
		for range n {
			if w.kind == avro.Map {
				k, rest, ok := readLong(b)
				if !ok || k < 0 || k > maxWalkBytes {
					return nil, false
				}
				if b, ok = skipN(rest, int(k)); !ok {
					return nil, false
				}
			}
			if b, ok = w.items.walk(b); !ok {
				return nil, false
			}
		}
		if size > 0 && size != int64(start-len(b)) {
			return nil, false
		}
	}
}

// readLong reads a zig-zag varint of at most 10 bytes, as the decoder does.
func readLong(b []byte) (int64, []byte, bool) {
	u, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, false
	}
	return int64(u>>1) ^ -int64(u&1), b[n:], true
}

// readInt reads a zig-zag varint of at most 5 bytes, as the decoder reads
// an int.
func readInt(b []byte) (int64, []byte, bool) {
	rest, ok := skipVarint(b, 5)
	if !ok {
		return 0, nil, false
	}
	n, _, ok := readLong(b[:len(b)-len(rest)])
	return n, rest, ok
}

// skipVarint skips a varint of at most max bytes (5 for an int, 10 for a
// long): the decoder refuses a longer one.
func skipVarint(b []byte, max int) ([]byte, bool) {
	for i := 0; i < len(b) && i < max; i++ {
		if b[i]&0x80 == 0 {
			return b[i+1:], true
		}
	}
	return nil, false
}

func skipN(b []byte, n int) ([]byte, bool) {
	if n > len(b) {
		return nil, false
	}
	return b[n:], true
}
