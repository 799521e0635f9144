package boltcheck

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/require"
)

var benchKeys = flag.Int("boltcheck.keys", 1_000_000, "keys in the file BenchmarkCheck checks")

// BenchmarkCheck: Check over a bulk-loaded file, through the memory map
// (what Check does where it can) and with plain reads (elsewhere).
//
//	go test -run '^$' -bench Check -benchtime 10x ./internal/boltcheck/
func BenchmarkCheck(b *testing.B) {
	path := loaded(b, *benchKeys)
	for _, mapped := range []bool{true, false} {
		name := "mapped"
		if !mapped {
			name = "read"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				require.NoError(b, check(path, mapped))
			}
		})
	}
}
