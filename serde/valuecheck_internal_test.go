package serde

import (
	"reflect"
	"testing"
	"unsafe"

	"github.com/hamba/avro/v2"
)

// BenchmarkValueCheck is what Encode's checks alone cost for a value with
// five fields that need one: Go int into Avro int at the top, in a nested
// record, in an array of eight and behind a nullable union.
func BenchmarkValueCheck(b *testing.B) {
	schema := avro.MustParse(`{
	  "type": "record", "name": "Profile", "fields": [
	    {"name": "name", "type": "string"},
	    {"name": "age", "type": "int"},
	    {"name": "address", "type": {"type": "record", "name": "Address", "fields": [
	      {"name": "street", "type": "string"}, {"name": "zip", "type": "int"}]}},
	    {"name": "scores", "type": {"type": "array", "items": "int"}},
	    {"name": "rank", "type": ["null", "int"], "default": null}
	  ]
	}`)
	type address struct {
		Street string `avro:"street"`
		Zip    int    `avro:"zip"`
	}
	type profile struct {
		Name    string  `avro:"name"`
		Age     int     `avro:"age"`
		Address address `avro:"address"`
		Scores  []int   `avro:"scores"`
		Rank    *int    `avro:"rank"`
	}
	c, err := plan(schema, reflect.TypeFor[profile]())
	if err != nil || c == nil {
		b.Fatal(err, c == nil)
	}
	rank := 7
	p := &profile{Name: "Grace", Age: 85, Address: address{Zip: 10001}, Scores: []int{1, 2, 3, 4, 5, 6, 7, 8}, Rank: &rank}
	b.ReportAllocs()
	for b.Loop() {
		if fe := c(unsafe.Pointer(p)); fe != nil {
			b.Fatal(fe.err())
		}
	}
}
