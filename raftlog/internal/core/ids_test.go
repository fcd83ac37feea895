package core

import (
	"bytes"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// NewIDs makes version-7, RFC-variant UUIDs carrying the current time,
// strictly increasing within a call and across concurrent callers, and
// never the same twice.
func TestNewIDs(t *testing.T) {
	before := time.Now().UnixMilli()
	const workers, calls, per = 8, 200, 64
	out := make([][]uuid.UUID, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls {
				ids := make([]uuid.UUID, per)
				NewIDs(ids)
				out[w] = append(out[w], ids...)
			}
		}()
	}
	wg.Wait()
	after := time.Now().UnixMilli()
	var all []uuid.UUID
	for w := range workers {
		// One caller's IDs come in the order it got them.
		require.True(t, slices.IsSortedFunc(out[w], func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }), "worker %d", w)
		all = append(all, out[w]...)
	}
	for _, id := range all {
		require.Equal(t, uuid.Version(7), id.Version())
		require.Equal(t, uuid.RFC4122, id.Variant())
		ms := id.Time() // 100 ns units since 1582; compare in Unix ms
		sec, nsec := ms.UnixTime()
		unixMs := sec*1000 + nsec/1e6
		// A run may borrow a few milliseconds' sequence numbers ahead.
		require.GreaterOrEqual(t, unixMs, before)
		require.LessOrEqual(t, unixMs, after+int64(workers*calls*per/4096)+1)
	}
	slices.SortFunc(all, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	require.Len(t, slices.Compact(all), workers*calls*per, "every ID is new")
	NewIDs(nil) // nothing to do
}

func BenchmarkNewIDs(b *testing.B) {
	ids := make([]uuid.UUID, 64)
	b.Run("NewIDs/64", func(b *testing.B) {
		for b.Loop() {
			NewIDs(ids)
		}
	})
	b.Run("uuid.NewV7/64", func(b *testing.B) {
		for b.Loop() {
			for i := range ids {
				ids[i] = uuid.Must(uuid.NewV7())
			}
		}
	})
}

// NewIDRun makes UUIDv7s that count up by one in their last 62 bits from
// the first, share its time and sequence, and stay below the IDs of any
// later call.
func TestNewIDRun(t *testing.T) {
	var prev uuid.UUID
	for range 100 {
		ids := make([]uuid.UUID, 64)
		NewIDRun(ids)
		for i, id := range ids {
			require.Equal(t, uuid.Version(7), id.Version())
			require.Equal(t, uuid.RFC4122, id.Variant())
			require.Equal(t, ids[0][:8], id[:8], "one time and sequence")
			require.Less(t, bytes.Compare(prev[:], id[:]), 0, "increasing, within and across calls")
			if i > 0 {
				a, b := new(big.Int).SetBytes(ids[i-1][:]), new(big.Int).SetBytes(id[:])
				require.Equal(t, int64(1), b.Sub(b, a).Int64(), "consecutive")
			}
			prev = id
		}
		require.Zero(t, ids[0][8]&0x20, "the top bit of the 62 is clear: no run overflows them")
		single := make([]uuid.UUID, 1)
		NewIDs(single)
		require.Less(t, bytes.Compare(prev[:], single[0][:]), 0, "NewIDs after NewIDRun")
		prev = single[0]
	}
}
