package raftlog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestListKeysOverPartitionsAndStats(t *testing.T) {
	l := openSingle(t, t.TempDir(), func(c *Config) { c.Partitions, c.Shards = 4, 2 })
	ctx := context.Background()
	for i := range 25 {
		_, err := l.Append(ctx, fmt.Sprintf("order-%d", i), []NewRecord{rec("a"), rec("bc")})
		require.NoError(t, err)
	}
	_, err := l.Append(ctx, "customer-1", []NewRecord{rec("x")})
	require.NoError(t, err)
	_, err = l.DeleteKey(ctx, "order-3")
	require.NoError(t, err)

	var got []string
	after := ""
	for {
		page, err := l.ListKeys(ctx, "order-", after, 10)
		require.NoError(t, err)
		for _, k := range page {
			got = append(got, k.Key)
			require.Equal(t, l.Partition(k.Key), k.Partition)
			require.Equal(t, uint64(2), k.Seq)
			require.Equal(t, k.Key == "order-3", k.Deleted)
		}
		if len(page) < 10 {
			break
		}
		after = page[len(page)-1].Key
	}
	var want []string
	for i := range 25 {
		want = append(want, fmt.Sprintf("order-%d", i))
	}
	require.Equal(t, want, got) // 0..9, then 10..24: shorter keys first

	st := l.Stats()
	require.Equal(t, uint64(27), st.Appends) // 26 appends and one delete
	require.Equal(t, uint64(51), st.AppendRecords)
	require.Equal(t, uint64(25*3+1), st.AppendBytes)
	require.Equal(t, uint64(27), st.AppendLatency.Count)
	proposed := int64(0) // this node leads both shards: every append went through its batchers
	for _, s := range st.Shards {
		proposed += s.EntrySizes.Sum
	}
	require.Equal(t, int64(27), proposed)

	ms, err := l.MemberStates(ctx, time.Second)
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.True(t, ms[0].Reachable)
	require.True(t, ms[0].Voter)
	require.Len(t, ms[0].Shards, 2)
}
