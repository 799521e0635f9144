package serde

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"
)

// Two levels combine direction by direction, each taking the longer reach.
func TestTheStricterOfTwoLevelsAsksForEverythingEitherAsksFor(t *testing.T) {
	for _, tc := range []struct {
		a, b Compatibility
		want string
	}{
		{sr.CompatNone, sr.CompatNone, "NONE"},
		{sr.CompatNone, sr.CompatBackward, "BACKWARD"},
		{sr.CompatBackward, sr.CompatForward, "FULL"},
		{sr.CompatBackward, sr.CompatBackwardTransitive, "BACKWARD_TRANSITIVE"},
		{sr.CompatFull, sr.CompatBackward, "FULL"},
		{sr.CompatFull, sr.CompatBackwardTransitive, "BACKWARD_TRANSITIVE+FORWARD"},
		{sr.CompatForwardTransitive, sr.CompatBackward, "BACKWARD+FORWARD_TRANSITIVE"},
		{sr.CompatBackwardTransitive, sr.CompatForwardTransitive, "FULL_TRANSITIVE"},
		{sr.CompatFullTransitive, sr.CompatNone, "FULL_TRANSITIVE"},
		{sr.CompatFullTransitive, sr.CompatFull, "FULL_TRANSITIVE"},
	} {
		a, err := ruleOf(tc.a)
		require.NoError(t, err)
		b, err := ruleOf(tc.b)
		require.NoError(t, err)
		require.Equal(t, tc.want, a.stricter(b).String(), "%v with %v", tc.a, tc.b)
		require.Equal(t, tc.want, b.stricter(a).String(), "%v with %v", tc.b, tc.a)
	}
	_, err := ruleOf(Compatibility(0))
	require.Error(t, err)
}
