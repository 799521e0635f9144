package serde_test

import (
	"context"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

// codecs returns a v2 codec that knows (through its registry) the v1 schema
// too, and the wire bytes of one v1 and one v2 value.
func codecs(tb testing.TB) (*serde.Codec[testdata.User], []byte, []byte) {
	tb.Helper()
	rc := registry(tb)
	ctx := context.Background()
	c1, err := serde.New[testdata.UserV1](ctx, rc, "users-value", testdata.UserV1Schema, sr.CompatBackward)
	if err != nil {
		tb.Fatal(err)
	}
	c2, err := serde.New[testdata.User](ctx, rc, "users-value", testdata.UserV2Schema, sr.CompatBackward)
	if err != nil {
		tb.Fatal(err)
	}
	b1, err := c1.Encode(testdata.UserV1{FirstName: "Ada", LastName: "Lovelace", Age: 36})
	if err != nil {
		tb.Fatal(err)
	}
	email := "grace@example.com"
	b2, err := c2.Encode(testdata.User{FirstName: "Grace", LastName: "Hopper", Age: 85, Email: &email})
	if err != nil {
		tb.Fatal(err)
	}
	return c2, b1, b2
}

// FuzzDecode feeds arbitrary bytes to Codec.Decode: it must never panic, an
// error must wrap ErrMalformed, ErrUnknownSchema or ErrUnresolvableSchema,
// and whatever decodes must survive an encode/decode round trip unchanged.
func FuzzDecode(f *testing.F) {
	c, v1, v2 := codecs(f)
	f.Add(v1)
	f.Add(v2)
	for i := range len(v2) {
		f.Add(v2[:i]) // every truncation
	}
	f.Add(append([]byte{1}, v2[1:]...))                                      // wrong magic byte
	f.Add(append([]byte{0, 0, 0, 0x30, 0x39}, v2[5:]...))                    // unknown schema id
	f.Add(append([]byte{0, 0xff, 0xff, 0xff, 0xff}, v2[5:]...))              // negative schema id
	f.Add(append(append([]byte{}, v2[:5]...), 0xfe, 0xff, 0xff, 0xff, 0x0f)) // huge string length
	f.Add(append(append([]byte{}, v2[:5]...), 0x01))                         // negative string length
	f.Add(append(append([]byte{}, v2...), 0, 1, 2))                          // trailing bytes
	f.Add([]byte(`{"first_name":"Ada"}`))

	ctx := context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		var u testdata.User
		err := c.Decode(ctx, b, &u)
		if err != nil {
			if !errors.Is(err, serde.ErrMalformed) && !errors.Is(err, serde.ErrUnknownSchema) &&
				!errors.Is(err, serde.ErrUnresolvableSchema) {
				t.Fatalf("Decode(%x): error wraps none of ErrMalformed, ErrUnknownSchema, ErrUnresolvableSchema: %v", b, err)
			}
			if errors.Is(err, serde.ErrRegistryUnavailable) {
				t.Fatalf("Decode(%x): registry reported unavailable: %v", b, err)
			}
			if c.Check(ctx, b) == nil {
				t.Fatalf("Check(%x) = nil, Decode failed with %v", b, err)
			}
			return
		}
		if err := c.Check(ctx, b); err != nil {
			t.Fatalf("Check(%x) = %v, Decode succeeded", b, err)
		}
		again, err := c.Encode(u)
		if err != nil {
			t.Fatalf("re-encode of %+v decoded from %x: %v", u, b, err)
		}
		var u2 testdata.User
		if err := c.Decode(ctx, again, &u2); err != nil {
			t.Fatalf("decode of re-encoded %x: %v", again, err)
		}
		if u.FirstName != u2.FirstName || u.LastName != u2.LastName || u.Age != u2.Age ||
			(u.Email == nil) != (u2.Email == nil) || (u.Email != nil && *u.Email != *u2.Email) {
			t.Fatalf("round trip changed %+v into %+v", u, u2)
		}
	})
}

// BenchmarkCheck is the cost restores pay per record to find poison: the
// header, the cached writer schema and a full decode into a scratch value.
func BenchmarkCheck(b *testing.B) {
	c, v1, v2 := codecs(b)
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		v    []byte
	}{{"v2", v2}, {"v1-resolved", v1}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.v)))
			for b.Loop() {
				if err := c.Check(ctx, bc.v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
