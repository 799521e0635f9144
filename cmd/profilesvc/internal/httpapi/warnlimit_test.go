package httpapi

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWarnLimiterLetsOneWarningPerKeyThroughPerIntervalAndCountsTheRest(t *testing.T) {
	l := &warnLimiter{every: 5 * time.Second}
	t0 := time.Now()

	ok, n := l.allow("a:1", t0)
	require.True(t, ok)
	require.Zero(t, n)
	for i := range 7 {
		ok, _ = l.allow("a:1", t0.Add(time.Duration(i)*500*time.Millisecond))
		require.False(t, ok, "within 5s of the last one")
	}
	ok, n = l.allow("b:1", t0.Add(time.Second))
	require.True(t, ok, "another owner has an interval of its own")
	require.Zero(t, n)

	ok, n = l.allow("a:1", t0.Add(5*time.Second))
	require.True(t, ok)
	require.Equal(t, 7, n, "what was held back since")
	ok, n = l.allow("a:1", t0.Add(11*time.Second))
	require.True(t, ok)
	require.Zero(t, n)
}

func TestWarnLimiterForgetsKeysWhoseIntervalRanOutPastItsBound(t *testing.T) {
	l := &warnLimiter{every: time.Second}
	t0 := time.Now()
	for i := range maxWarnKeys {
		l.allow("old:"+strconv.Itoa(i), t0)
	}
	ok, _ := l.allow("new:1", t0.Add(2*time.Second))
	require.True(t, ok)
	require.Len(t, l.keys, 1, "the expired keys are gone")
}
