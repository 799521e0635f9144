package serde_test

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

// profileSchema nests a record, an array and a nullable union, all holding
// Avro ints, so that a Go type with int fields needs a range check at each.
const profileSchema = `{
  "type": "record", "name": "Profile", "namespace": "com.example",
  "fields": [
    {"name": "name", "type": "string"},
    {"name": "age", "type": "int"},
    {"name": "address", "type": {"type": "record", "name": "Address", "fields": [
      {"name": "street", "type": "string"},
      {"name": "zip", "type": "int"}
    ]}},
    {"name": "scores", "type": {"type": "array", "items": "int"}},
    {"name": "rank", "type": ["null", "int"], "default": null}
  ]
}`

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

// BenchmarkEncode is the cost Put pays per value before it produces: the
// value checks and the Avro encoding. "user" has no field that needs a range
// check (int32 into Avro int); "profile" has five (Go int into Avro int, in a
// nested record, an array and a nullable union).
func BenchmarkEncode(b *testing.B) {
	ctx := context.Background()
	email := "grace@example.com"
	uc, err := serde.New[testdata.User](ctx, registry(b), "users-value", testdata.UserV2Schema, sr.CompatNone)
	if err != nil {
		b.Fatal(err)
	}
	pc, err := serde.New[profile](ctx, registry(b), "profiles-value", profileSchema, sr.CompatNone)
	if err != nil {
		b.Fatal(err)
	}
	rank := 7
	u := testdata.User{FirstName: "Grace", LastName: "Hopper", Age: 85, Email: &email}
	p := profile{Name: "Grace", Age: 85, Address: address{Street: "Main St", Zip: 10001},
		Scores: []int{1, 2, 3, 4, 5, 6, 7, 8}, Rank: &rank}
	b.Run("user", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := uc.Encode(u); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("profile", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := pc.Encode(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkValueCheck is what Encode's checks alone cost for the profile of
// BenchmarkEncode (five fields that need one, eight scores).
func BenchmarkValueCheck(b *testing.B) {
	check, err := serde.ValueCheck[profile](profileSchema)
	if err != nil || check == nil {
		b.Fatal(err, check == nil)
	}
	rank := 7
	p := &profile{Name: "Grace", Age: 85, Address: address{Zip: 10001}, Scores: []int{1, 2, 3, 4, 5, 6, 7, 8}, Rank: &rank}
	b.ReportAllocs()
	for b.Loop() {
		if err := check(p); err != nil {
			b.Fatal(err)
		}
	}
}
