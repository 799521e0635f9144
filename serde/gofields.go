package serde

import (
	"reflect"
	"strings"
)

// goField is a field of a struct as hamba/avro sees it: exported fields by
// their avro tag (or Go name), those of embedded structs promoted, breadth
// first, the first of a name winning.
type goField struct {
	name   string // Avro name: the avro tag up to a comma, or the Go name
	goName string // "Address.Zip" for a promoted field
	typ    reflect.Type
	steps  []step // from the struct to the field
}

// step moves a pointer by off bytes and then, if deref, follows the pointer
// found there (an embedded *T).
type step struct {
	off   uintptr
	deref bool
}

type goFields []goField

func (fs goFields) index(name string) int {
	for i, f := range fs {
		if f.name == name {
			return i
		}
	}
	return -1
}

// describeStruct mirrors hamba/avro's describeStruct (codec_record.go).
func describeStruct(t reflect.Type) goFields {
	type pending struct {
		t      reflect.Type
		chain  []reflect.StructField
		goName string
	}
	var fields goFields
	visited := map[reflect.Type]bool{}
	next := []pending{{t: t}}
	for len(next) > 0 {
		curr := next
		next = nil
		for _, p := range curr {
			if visited[p.t] {
				continue
			}
			visited[p.t] = true
			for i := range p.t.NumField() {
				sf := p.t.Field(i)
				chain := append(append([]reflect.StructField(nil), p.chain...), sf)
				goName := sf.Name
				if p.goName != "" {
					goName = p.goName + "." + sf.Name
				}
				if sf.Anonymous {
					et := sf.Type
					if et.Kind() == reflect.Pointer {
						et = et.Elem()
					}
					if et.Kind() == reflect.Struct {
						next = append(next, pending{t: et, chain: chain, goName: goName})
					}
					continue
				}
				if !sf.IsExported() {
					continue
				}
				name := sf.Name
				if tag, ok := sf.Tag.Lookup("avro"); ok {
					name, _, _ = strings.Cut(tag, ",")
				}
				fields = append(fields, goField{name: name, goName: goName, typ: sf.Type, steps: steps(chain)})
			}
		}
	}
	return fields
}

// steps turns a chain of (embedded) struct fields into pointer moves.
func steps(chain []reflect.StructField) []step {
	var out []step
	var off uintptr
	for i, sf := range chain {
		off += sf.Offset
		if i < len(chain)-1 && sf.Type.Kind() == reflect.Pointer {
			out = append(out, step{off: off, deref: true})
			off = 0
		}
	}
	return append(out, step{off: off})
}
