package backoff

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPolicyDelay(t *testing.T) {
	p := Policy{Initial: 5 * time.Millisecond, Max: 500 * time.Millisecond}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 500, 500}
	for i, w := range want {
		require.Equal(t, w*time.Millisecond, p.Delay(i+1), "retry %d", i+1)
	}
	require.Equal(t, 5*time.Millisecond, p.Delay(0))
	require.Equal(t, time.Duration(0), Policy{}.Delay(10))
	require.Equal(t, 8*time.Second, Policy{Initial: time.Second}.Delay(4), "no cap")
}

func TestBackoffCountsAndResets(t *testing.T) {
	b := Backoff{Policy: Policy{Initial: time.Millisecond, Max: 4 * time.Millisecond}}
	require.Equal(t, time.Millisecond, b.Next())
	require.Equal(t, 2*time.Millisecond, b.Next())
	require.Equal(t, 4*time.Millisecond, b.Next())
	require.Equal(t, 4*time.Millisecond, b.Next())
	b.Reset()
	require.Equal(t, time.Millisecond, b.Next())
}

func TestJitterBounds(t *testing.T) {
	d := 100 * time.Millisecond
	for range 1000 {
		f := Full(d)
		require.True(t, f >= 0 && f <= d, "full %v", f)
		s := Spread(d, 0.25)
		require.True(t, s >= 75*time.Millisecond && s <= 125*time.Millisecond, "spread %v", s)
	}
	require.Equal(t, d, Spread(d, 0))
	require.Equal(t, time.Duration(0), Full(0))
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, Sleep(ctx, time.Hour), context.Canceled)
	require.NoError(t, Sleep(context.Background(), time.Millisecond))
}
