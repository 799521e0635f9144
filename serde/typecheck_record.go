package serde

import (
	"fmt"
	"reflect"
	"unsafe"

	"github.com/hamba/avro/v2"
)

func (b *planner) buildRecord(s *avro.RecordSchema, t reflect.Type, path string) (check, error) {
	switch {
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
		elem, err := b.build(s, t.Elem(), path)
		if err != nil || elem == nil {
			return nil, err
		}
		return ptrCheck(elem), nil
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String && t.Elem().Kind() == reflect.Interface && t.Elem().NumMethod() == 0:
		if !holdsInt(s, map[string]bool{}) {
			return nil, nil
		}
		return anyMapCheck(t, s), nil
	case t.Kind() != reflect.Struct:
		return b.into(path, s, t, "use a struct")
	}

	key := planKey{s.FullName(), t}
	if cell, ok := b.building[key]; ok {
		// A record inside itself: check through the cell structFields fills.
		return func(p unsafe.Pointer) *fieldError {
			if *cell == nil {
				return nil
			}
			return (*cell)(p)
		}, nil
	}
	fields, err := b.structFields(s, t, path, key)
	if err != nil || len(fields) == 0 {
		return nil, err
	}
	return structCheck(fields), nil
}

// structFields returns the checks of struct t under record s. A field that
// is itself a struct (held by value) has its own checks taken in, at their
// offsets from t, so that checking t makes one pass and no nested call.
func (b *planner) structFields(s *avro.RecordSchema, t reflect.Type, path string, key planKey) ([]fieldCheck, error) {
	cell := new(check) // for the record's references to itself, if any
	b.building[key] = cell
	defer delete(b.building, key)

	gofields := describeStruct(t)
	used := make([]bool, len(gofields))
	var checks []fieldCheck
	for _, f := range s.Fields() {
		fpath := f.Name()
		if path != "" {
			fpath = path + "." + f.Name()
		}
		i := gofields.index(f.Name())
		if i < 0 {
			if f.HasDefault() {
				continue // encoded as its default, skipped when decoding
			}
			if _, err := b.mismatch(fpath, "Avro %s has no default and Go type %v has no field for it (tag one avro:%q)",
				avroName(f.Type()), t, f.Name()); err != nil {
				return nil, err
			}
			continue
		}
		used[i] = true
		gf := gofields[i]
		if rec, ok := deref(f.Type()).(*avro.RecordSchema); ok && gf.typ.Kind() == reflect.Struct && len(gf.steps) == 1 {
			k := planKey{rec.FullName(), gf.typ}
			if _, busy := b.building[k]; !busy {
				sub, err := b.structFields(rec, gf.typ, fpath, k)
				if err != nil {
					return nil, err
				}
				for _, sf := range sub {
					if sf.via != nil {
						checks = append(checks, fieldCheck{name: f.Name(), off: gf.steps[0].off, check: structCheck(sub)})
						sub = nil
						break
					}
				}
				for _, sf := range sub {
					sf.name = f.Name() + "." + sf.name
					sf.off += gf.steps[0].off
					checks = append(checks, sf)
				}
				continue
			}
		}
		c, err := b.build(f.Type(), gf.typ, fpath)
		if err != nil {
			return nil, err
		}
		if c != nil {
			checks = append(checks, newFieldCheck(f.Name(), gf, c, leafOf(f.Type(), gf.typ)))
		}
	}
	if !b.lenient {
		for i, gf := range gofields {
			if used[i] || gf.name == "-" {
				continue
			}
			fpath := gf.name
			if path != "" {
				fpath = path + "." + gf.name
			}
			problem := fmt.Sprintf("Go field %s is not in the schema (tag it avro:\"-\" to leave it out)", gf.goName)
			if j := gofields.index(gf.name); j != i {
				problem = fmt.Sprintf("Go field %s is hidden by Go field %s of the same Avro name", gf.goName, gofields[j].goName)
			}
			return nil, &TypeError{GoType: b.root, Field: fpath, Problem: problem, Extra: true}
		}
	}
	if len(checks) > 0 {
		*cell = structCheck(checks)
	}
	return checks, nil
}
