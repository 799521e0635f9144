package serde

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/hamba/avro/v2"
)

// This file holds the checks Encode runs before hamba/avro encodes a value:
// hamba/avro writes a Go int into an Avro int as int32(v), so 3_000_000_000
// would be stored as -1294967296. typecheck.go plans, per Go type, which
// fields need a check; only those are looked at, through offsets fixed at
// New.

// fieldError is a value that does not fit, and where. segs is the path
// innermost first ("zip", "address"); an index or map key is "[3]".
type fieldError struct {
	segs []string
	msg  string
}

func (e *fieldError) in(seg string) *fieldError {
	e.segs = append(e.segs, seg)
	return e
}

func (e *fieldError) path() string {
	var b strings.Builder
	for i := len(e.segs) - 1; i >= 0; i-- {
		s := e.segs[i]
		if b.Len() > 0 && !strings.HasPrefix(s, "[") {
			b.WriteByte('.')
		}
		b.WriteString(s)
	}
	return b.String()
}

// err returns the error Encode reports: ErrInvalidValue, the field, why.
func (e *fieldError) err() error {
	if p := e.path(); p != "" {
		return fmt.Errorf("%w: field %q: %s", ErrInvalidValue, p, e.msg)
	}
	return fmt.Errorf("%w: %s", ErrInvalidValue, e.msg)
}

func intOutOfRange(v int64) *fieldError {
	return &fieldError{msg: fmt.Sprintf("%d does not fit Avro int (%d to %d)", v, math.MinInt32, math.MaxInt32)}
}

// checkInt32 checks a Go int bound for an Avro int.
func checkInt32(p unsafe.Pointer) *fieldError {
	if v := *(*int)(p); v < math.MinInt32 || v > math.MaxInt32 {
		return intOutOfRange(int64(v))
	}
	return nil
}

// checkMillis checks a time.Duration bound for an Avro int time-millis:
// hamba/avro writes int32(d / time.Millisecond).
func checkMillis(p unsafe.Pointer) *fieldError {
	d := *(*time.Duration)(p)
	if ms := d / time.Millisecond; ms < math.MinInt32 || ms > math.MaxInt32 {
		return &fieldError{msg: fmt.Sprintf("%v is %d ms, which does not fit Avro int time-millis (%d to %d ms)",
			d, int64(ms), math.MinInt32, math.MaxInt32)}
	}
	return nil
}

// fieldCheck is one field of a struct that needs a check.
type fieldCheck struct {
	name  string  // "zip", or "address.zip" for a field of a nested struct
	off   uintptr // from the struct, when via is nil
	via   []step  // through embedded pointers, else nil
	leaf  leaf    // a check done inline, or leafNone to call check
	check check
}

// leaf is a check common enough to be done inline, without a call.
type leaf uint8

const (
	leafNone     leaf = iota
	leafInt           // a Go int into an Avro int
	leafPtrInt        // a *int into a nullable Avro int
	leafIntSlice      // a []int into an Avro array of int
)

// newFieldCheck makes the check of field name (Go field gf) with c, or
// inline when l says it can be.
func newFieldCheck(name string, gf goField, c check, l leaf) fieldCheck {
	fc := fieldCheck{name: name, check: c, leaf: l}
	if len(gf.steps) == 1 {
		fc.off = gf.steps[0].off
	} else {
		fc.via = gf.steps
	}
	return fc
}

func structCheck(fields []fieldCheck) check {
	return func(p unsafe.Pointer) *fieldError {
		for i := range fields {
			f := &fields[i]
			q := unsafe.Add(p, f.off)
			if f.via != nil {
				if q = follow(p, f.via); q == nil {
					continue // a nil embedded pointer: hamba/avro reports it
				}
			}
			switch f.leaf {
			case leafInt:
				if v := *(*int)(q); v < math.MinInt32 || v > math.MaxInt32 {
					return intOutOfRange(int64(v)).in(f.name)
				}
			case leafPtrInt:
				if v := *(**int)(q); v != nil && (*v < math.MinInt32 || *v > math.MaxInt32) {
					return intOutOfRange(int64(*v)).in(f.name)
				}
			case leafIntSlice:
				for j, v := range *(*[]int)(q) {
					if v < math.MinInt32 || v > math.MaxInt32 {
						return intOutOfRange(int64(v)).in("[" + strconv.Itoa(j) + "]").in(f.name)
					}
				}
			default:
				if fe := f.check(q); fe != nil {
					return fe.in(f.name)
				}
			}
		}
		return nil
	}
}

func follow(p unsafe.Pointer, via []step) unsafe.Pointer {
	for _, s := range via {
		p = unsafe.Add(p, s.off)
		if s.deref {
			if p = *(*unsafe.Pointer)(p); p == nil {
				return nil
			}
		}
	}
	return p
}

// ptrCheck checks what a non-nil pointer points to.
func ptrCheck(elem check) check {
	return func(p unsafe.Pointer) *fieldError {
		if q := *(*unsafe.Pointer)(p); q != nil {
			return elem(q)
		}
		return nil
	}
}

// sliceCheck checks every element of a slice of et with elem; isInt says
// elem is checkInt32, which the loop then does inline.
func sliceCheck(et reflect.Type, elem check, isInt bool) check {
	size := et.Size()
	return func(p unsafe.Pointer) *fieldError {
		hdr := (*[3]uintptr)(p) // data, len, cap
		data, n := *(*unsafe.Pointer)(p), int(hdr[1])
		if isInt {
			for i, v := range unsafe.Slice((*int)(data), n) {
				if v < math.MinInt32 || v > math.MaxInt32 {
					return intOutOfRange(int64(v)).in("[" + strconv.Itoa(i) + "]")
				}
			}
			return nil
		}
		for i := range n {
			if fe := elem(unsafe.Add(data, uintptr(i)*size)); fe != nil {
				return fe.in("[" + strconv.Itoa(i) + "]")
			}
		}
		return nil
	}
}

// mapCheck checks every value of a map of type t. Map values are not
// addressable, so each is copied out first.
func mapCheck(t reflect.Type, elem check) check {
	return func(p unsafe.Pointer) *fieldError {
		m := reflect.NewAt(t, p).Elem()
		if m.Len() == 0 {
			return nil
		}
		tmp := reflect.New(t.Elem())
		for it := m.MapRange(); it.Next(); {
			tmp.Elem().Set(it.Value())
			if fe := elem(tmp.UnsafePointer()); fe != nil {
				return fe.in(fmt.Sprintf("[%v]", it.Key()))
			}
		}
		return nil
	}
}

// anyMapCheck checks a map[string]any that holds a record (field name ->
// value) or a union (branch name -> value) of schema s.
func anyMapCheck(t reflect.Type, s avro.Schema) check {
	return func(p unsafe.Pointer) *fieldError {
		if t == anyMapType {
			return checkAny(s, *(*map[string]any)(p))
		}
		m := reflect.NewAt(t, p).Elem()
		plain := make(map[string]any, m.Len())
		for it := m.MapRange(); it.Next(); {
			plain[it.Key().String()] = it.Value().Interface()
		}
		return checkAny(s, plain)
	}
}

// checkAny checks a value held in an interface (a field of type any, the
// values of a map[string]any) against schema s, choosing what hamba/avro
// would choose for its dynamic type.
func checkAny(s avro.Schema, v any) *fieldError {
	s = deref(s)
	switch x := v.(type) {
	case nil, string, bool, float32, float64, []byte, int8, int16, int32, int64,
		uint, uint8, uint16, uint32, uint64:
		return nil // holds no int, or hamba/avro refuses it for an Avro int
	case int:
		switch s := s.(type) {
		case *avro.PrimitiveSchema:
			if s.Type() != avro.Int {
				return nil
			}
		case *avro.UnionSchema:
			// hamba/avro writes a Go int as the union's "int" branch if it
			// has one, else as its "long" one.
			if b, _ := s.Types().Get(string(avro.Int)); b == nil {
				return nil
			}
		default:
			return nil
		}
		if x < math.MinInt32 || x > math.MaxInt32 {
			return intOutOfRange(int64(x))
		}
		return nil
	case map[string]any:
		switch s := s.(type) {
		case *avro.RecordSchema:
			for _, f := range s.Fields() {
				if fv, ok := x[f.Name()]; ok {
					if fe := checkAny(f.Type(), fv); fe != nil {
						return fe.in(f.Name())
					}
				}
			}
		case *avro.MapSchema:
			for k, fv := range x {
				if fe := checkAny(s.Values(), fv); fe != nil {
					return fe.in("[" + k + "]")
				}
			}
		case *avro.UnionSchema:
			for k, fv := range x { // one entry: the branch's name
				if b, _ := s.Types().Get(k); b != nil {
					return checkAny(b, fv)
				}
			}
		}
		return nil
	case []any:
		if a, ok := s.(*avro.ArraySchema); ok {
			for i, e := range x {
				if fe := checkAny(a.Items(), e); fe != nil {
					return fe.in("[" + strconv.Itoa(i) + "]")
				}
			}
		}
		return nil
	}
	// Another Go type: its own plan, made once, on a copy it can address.
	t := reflect.TypeOf(v)
	c := dynamicPlan(s, t)
	if c == nil {
		return nil
	}
	pv := reflect.New(t)
	pv.Elem().Set(reflect.ValueOf(v))
	return c(pv.UnsafePointer())
}

// dynamicPlans caches the lenient plans of Go types met inside interfaces.
var dynamicPlans sync.Map // dynKey -> check (nil for none)

type dynKey struct {
	s avro.Schema
	t reflect.Type
}

func dynamicPlan(s avro.Schema, t reflect.Type) check {
	k := dynKey{s, t}
	if c, ok := dynamicPlans.Load(k); ok {
		return c.(check)
	}
	p := &planner{root: t, lenient: true, building: map[planKey]*check{}}
	c, _ := p.build(s, t, "") // lenient: never fails
	dynamicPlans.Store(k, c)
	return c
}
