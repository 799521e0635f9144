package serde

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
)

// sinkWriter and sinkReader exercise every kind the walker handles: each
// primitive, nested records, arrays, maps, unions of two and three
// branches, a field only the writer has (skipped when decoding) and one only
// the reader has (filled from its default).
const sinkWriter = `{"type":"record","name":"Sink","fields":[
 {"name":"b","type":"boolean"},
 {"name":"i","type":"int"},
 {"name":"l","type":"long"},
 {"name":"f","type":"float"},
 {"name":"d","type":"double"},
 {"name":"s","type":"string"},
 {"name":"y","type":"bytes"},
 {"name":"gone","type":{"type":"array","items":["null","double"]}},
 {"name":"a","type":{"type":"array","items":"string"}},
 {"name":"m","type":{"type":"map","values":"long"}},
 {"name":"u","type":["null","string"]},
 {"name":"u3","type":["null","long","string"]},
 {"name":"n","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"int"},{"name":"t","type":["null","boolean"]}]}}
]}`

const sinkReader = `{"type":"record","name":"Sink","fields":[
 {"name":"b","type":"boolean"},
 {"name":"i","type":"int"},
 {"name":"l","type":"long"},
 {"name":"f","type":"float"},
 {"name":"d","type":"double"},
 {"name":"s","type":"string"},
 {"name":"y","type":"bytes"},
 {"name":"a","type":{"type":"array","items":"string"}},
 {"name":"m","type":{"type":"map","values":"long"}},
 {"name":"u","type":["null","string"]},
 {"name":"u3","type":["null","long","string"]},
 {"name":"n","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"int"},{"name":"t","type":["null","boolean"]}]}},
 {"name":"added","type":"string","default":"none"}
]}`

type sinkInner struct {
	X int32 `avro:"x"`
	T *bool `avro:"t"`
}

type sinkIn struct {
	B     bool             `avro:"b"`
	I     int32            `avro:"i"`
	L     int64            `avro:"l"`
	F     float32          `avro:"f"`
	D     float64          `avro:"d"`
	S     string           `avro:"s"`
	Y     []byte           `avro:"y"`
	A     []string         `avro:"a"`
	M     map[string]int64 `avro:"m"`
	U     *string          `avro:"u"`
	U3    any              `avro:"u3"`
	N     sinkInner        `avro:"n"`
	Added string           `avro:"added"`
}

type sinkOut struct {
	B    bool             `avro:"b"`
	I    int32            `avro:"i"`
	L    int64            `avro:"l"`
	F    float32          `avro:"f"`
	D    float64          `avro:"d"`
	S    string           `avro:"s"`
	Y    []byte           `avro:"y"`
	Gone []*float64       `avro:"gone"`
	A    []string         `avro:"a"`
	M    map[string]int64 `avro:"m"`
	U    *string          `avro:"u"`
	U3   any              `avro:"u3"`
	N    sinkInner        `avro:"n"`
}

func sinkSchemas(tb testing.TB) (reader, writer, resolved avro.Schema, w *walker) {
	tb.Helper()
	writer = avro.MustParse(sinkWriter)
	reader = avro.MustParse(sinkReader)
	resolved, err := avro.NewSchemaCompatibility().Resolve(reader, writer)
	if err != nil {
		tb.Fatal(err)
	}
	if w = newWalker(reader, writer); w == nil {
		tb.Fatal("no walker for the sink schemas: the fuzz test would test nothing")
	}
	return reader, writer, resolved, w
}

// FuzzWalk checks the walker against decoding on a schema pair with every
// kind it handles: whatever the walker passes must decode. (A body it
// refuses is decoded by Check, so refusing more is allowed.)
func FuzzWalk(f *testing.F) {
	_, writer, resolved, w := sinkSchemas(f)
	s, d1, d2, tr := "x", 1.5, -2.0, true
	for _, v := range []sinkOut{
		{},
		{B: true, I: -7, L: 1 << 40, F: 1.5, D: -3.25, S: "hello", Y: []byte{0, 1, 2},
			Gone: []*float64{nil, &d1, &d2}, A: []string{"a", "", "ccc"}, M: map[string]int64{"k": -1, "": 9},
			U: &s, U3: int64(5), N: sinkInner{X: 3, T: &tr}},
		{U3: "three", A: make([]string, 300)},
	} {
		b, err := avro.Marshal(writer, v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !w.pass(b) {
			return
		}
		var v sinkIn
		if err := decodeBody(resolved, 1, b, &v); err != nil {
			t.Fatalf("the walker passed %x, decoding refused it: %v", b, err)
		}
	})
}

func TestTheWalkerPassesWhatDecodesAndRefusesWhatDoesNot(t *testing.T) {
	_, writer, resolved, w := sinkSchemas(t)
	s := "x"
	good, err := avro.Marshal(writer, sinkOut{S: "hi", A: []string{"a"}, M: map[string]int64{"k": 1}, U: &s, U3: "z"})
	if err != nil {
		t.Fatal(err)
	}
	var v sinkIn
	if err := decodeBody(resolved, 1, good, &v); err != nil {
		t.Fatal(err)
	}
	if !w.pass(good) {
		t.Fatalf("a body written with the writer schema was refused: %x", good)
	}
	if v.Added != "none" || v.S != "hi" || *v.U != "x" || v.U3 != "z" {
		t.Fatalf("decoded %+v", v)
	}
	for i := range len(good) {
		if w.pass(good[:i]) {
			t.Errorf("truncated to %d of %d bytes: passed", i, len(good))
		}
	}
	bad := append([]byte{2}, good[1:]...) // a boolean of 2
	if w.pass(bad) {
		t.Error("a boolean byte of 2 passed")
	}
}

func TestAWalkerIsBuiltOnlyForWhatItCanVouchFor(t *testing.T) {
	rec := func(fieldType string) string {
		return `{"type":"record","name":"R","fields":[{"name":"f","type":` + fieldType + `}]}`
	}
	for _, c := range []struct {
		name           string
		reader, writer string
		want           bool
	}{
		{"same primitives", rec(`"string"`), rec(`"string"`), true},
		{"nullable union", rec(`["null","string"]`), rec(`["null","string"]`), true},
		{"promotion int to long", rec(`"long"`), rec(`"int"`), false},
		{"union branches in another order", rec(`["string","null"]`), rec(`["null","string"]`), false},
		{"union on the reader's side only", rec(`["null","string"]`), rec(`"string"`), false},
		{"enum", rec(`{"type":"enum","name":"E","symbols":["A","B"]}`), rec(`{"type":"enum","name":"E","symbols":["A","B"]}`), false},
		{"fixed", rec(`{"type":"fixed","name":"X","size":4}`), rec(`{"type":"fixed","name":"X","size":4}`), false},
		{"logical type", rec(`{"type":"long","logicalType":"timestamp-millis"}`), rec(`{"type":"long","logicalType":"timestamp-millis"}`), false},
		{"renamed record", `{"type":"record","name":"S","aliases":["R"],"fields":[{"name":"f","type":"int"}]}`, rec(`"int"`), false},
		{"field only the writer has, of a kind it handles", `{"type":"record","name":"R","fields":[]}`, rec(`{"type":"map","values":"bytes"}`), true},
		{"field only the writer has, an enum", `{"type":"record","name":"R","fields":[]}`, rec(`{"type":"enum","name":"E","symbols":["A"]}`), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, w := avro.MustParse(c.reader), avro.MustParse(c.writer)
			if _, err := avro.NewSchemaCompatibility().Resolve(r, w); err != nil {
				t.Fatalf("the pair does not resolve: %v", err)
			}
			if got := newWalker(r, w) != nil; got != c.want {
				t.Fatalf("walker built: %v, want %v", got, c.want)
			}
		})
	}
}

// Check gives Decode's verdict on bodies the walk could misjudge: Go types
// that parse text (time.Time, netip.Addr, as values and map keys), a V
// that is no struct, and a union index in a varint longer than an int's
// (all found by review; each passed the walk and failed to decode).
func TestCheckAgreesWithDecodeWhereTheGoTypeOrTheVarintDecides(t *testing.T) {
	ctx := context.Background()
	agree := func(t *testing.T, check, decode error) {
		t.Helper()
		if (check == nil) != (decode == nil) {
			t.Fatalf("Check = %v, Decode = %v", check, decode)
		}
	}
	hdr := []byte{0, 0, 0, 0, 7}
	t.Run("time.Time from a string, and a union index of 6 bytes", func(t *testing.T) {
		s := avro.MustParse(`{"type":"record","name":"Ev","fields":[{"name":"at","type":"string"},{"name":"u","type":["null","long"]}]}`)
		type Ev struct {
			At time.Time `avro:"at"`
			U  *int64    `avro:"u"`
		}
		c, err := newCodec[Ev](nil, "ev-value", s)
		if err != nil {
			t.Fatal(err)
		}
		c = c.withID(7)
		ts := append([]byte{0x28}, "2020-01-01T00:00:00Z"...)
		for _, body := range [][]byte{
			{0x06, 'n', 'o', 'w', 0x00},
			append(append([]byte{}, ts...), 0x80, 0x80, 0x80, 0x80, 0x80, 0x00),
			append(append([]byte{}, ts...), 0x00),
		} {
			b := append(append([]byte{}, hdr...), body...)
			var v Ev
			agree(t, c.Check(ctx, b), c.Decode(ctx, b, &v))
		}
	})
	t.Run("netip.Addr as a value and as a map key", func(t *testing.T) {
		s := avro.MustParse(`{"type":"record","name":"R","fields":[{"name":"ip","type":"string"},{"name":"m","type":{"type":"map","values":"int"}}]}`)
		type R struct {
			IP netip.Addr           `avro:"ip"`
			M  map[netip.Addr]int32 `avro:"m"`
		}
		c, err := newCodec[R](nil, "r-value", s)
		if err != nil {
			t.Skipf("the type check refuses it now: %v", err)
		}
		c = c.withID(7)
		for _, body := range [][]byte{
			{0x06, 'x', 'y', 'z', 0x00},
			append([]byte{0x0e}, "1.2.3.4\x00"...),
			append(append([]byte{0x0e}, "1.2.3.4"...), 0x02, 0x02, 'k', 0x02, 0x00),
		} {
			b := append(append([]byte{}, hdr...), body...)
			var v R
			agree(t, c.Check(ctx, b), c.Decode(ctx, b, &v))
		}
	})
	t.Run("a V that is no struct", func(t *testing.T) {
		c, err := newCodec[string](nil, "x-value", avro.MustParse(`"long"`))
		if err != nil {
			t.Skipf("the type check refuses it now: %v", err)
		}
		c = c.withID(7)
		b := append(append([]byte{}, hdr...), 0x02)
		var v string
		agree(t, c.Check(ctx, b), c.Decode(ctx, b, &v))
	})
	t.Run("a union index of 6 bytes, walked alone", func(t *testing.T) {
		s := avro.MustParse(`{"type":"record","name":"R","fields":[{"name":"u","type":["null","string"]}]}`)
		if newWalker(s, s).pass([]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x00}) {
			t.Fatal("the walk passed a union index longer than an int")
		}
	})
}
