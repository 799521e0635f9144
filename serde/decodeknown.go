package serde

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/sr"
)

// DecodeKnown is Decode for a value whose writer schema the codec has
// already resolved: it never waits (no lock, no registry). known is false,
// and v untouched, when b names a writer schema the codec has not resolved
// yet: Decode it then. Bytes that are not a framed value need no schema to
// be refused: known is true, with ErrMalformed. On an error v may be partly
// written, as with Decode. Strings and bytes decoded into v are copies, never
// slices of b, so b may be reused, or unmapped, once it returns.
func (c *Codec[V]) DecodeKnown(b []byte, v *V) (known bool, err error) {
	id, body, err := (*sr.ConfluentHeader)(nil).DecodeID(b)
	if err != nil {
		return true, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	ws, ok := (*c.decoders.Load())[id]
	if !ok {
		return false, nil
	}
	return true, decodeBody(ws.resolved, id, body, v)
}
