package state

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/hashicorp/raft"
)

// listAll pages through Keys of partition p with prefix, page records at a
// time, and returns the keys in the order listed.
func listAll(t *testing.T, f *Engine, p core.Partition, prefix string, page int) []ListedKey {
	t.Helper()
	var all []ListedKey
	after := ""
	for {
		got, err := f.Keys(p, prefix, after, page)
		require.NoError(t, err)
		require.LessOrEqual(t, len(got), page)
		all = append(all, got...)
		if len(got) < page {
			return all
		}
		after = got[len(got)-1].Key
	}
}

func TestKeysPagesThroughIndexAndTables(t *testing.T) {
	f := newTestFSM(t, 0)
	// Keys of many lengths (past 127 bytes, where the index's uvarint
	// lengths stop sorting numerically), several with two chunks, with and
	// without the prefix; the first half flushed to the file, the rest in
	// the active table; one key in both.
	var keys []string
	for i := range 300 {
		keys = append(keys, fmt.Sprintf("order-%d", i))
	}
	keys = append(keys, "order-"+strings.Repeat("x", 130), "order-"+strings.Repeat("y", 300), "orderly", "other-1", "o", strings.Repeat("z", 200))
	seqs := map[string]uint64{}
	idx, id := uint64(1), 1
	appendKey := func(k string, n int) {
		var ids []int
		for range n {
			ids = append(ids, id)
			id++
		}
		r := req(0, k, -1, ids...)
		resp := f.ApplyBatch([]*raft.Log{entryLog(idx, int64(idx), r)})
		require.Equal(t, "", errOf(resp[0]))
		idx++
		seqs[k] += uint64(n)
	}
	for i, k := range keys {
		n := 1
		if i%50 == 0 {
			n = 20 // two chunks of the index
		}
		appendKey(k, n)
		if i == len(keys)/2 {
			_, err := f.Snapshot() // flushes the table to the file
			require.NoError(t, err)
		}
	}
	appendKey("order-0", 3) // flushed before, and now in the table too
	resp := f.ApplyBatch([]*raft.Log{entryLog(idx, int64(idx), keyOp(0, "order-7", -1, 0))})
	require.Equal(t, "", errOf(resp[0]))

	want := func(prefix string) []string {
		var w []string
		for _, k := range keys {
			if strings.HasPrefix(k, prefix) {
				w = append(w, k)
			}
		}
		sort.Slice(w, func(i, j int) bool { return KeyBefore(w[i], w[j]) })
		return w
	}
	for _, c := range []struct {
		prefix string
		page   int
	}{{"order-", 7}, {"order-", 1000}, {"", 13}, {"order", 1}, {"zz", 5}, {"nothing", 5}} {
		got := listAll(t, f, 0, c.prefix, c.page)
		var names []string
		for _, k := range got {
			names = append(names, k.Key)
			require.Equal(t, seqs[k.Key], k.Seq, k.Key)
			require.Equal(t, k.Key == "order-7", k.Deleted, k.Key)
		}
		require.Equal(t, want(c.prefix), names, "prefix %q page %d", c.prefix, c.page)
	}
	require.True(t, KeyBefore("order-9", "order-10"))

	// Another partition's keys are not listed; a partition this shard
	// does not host lists nothing.
	got, err := f.Keys(1, "", "", 10)
	require.NoError(t, err)
	require.Empty(t, got)
	got, err = f.Keys(99, "", "", 10)
	require.NoError(t, err)
	require.Empty(t, got)
}

// errOf is the error text of an apply response, "" for none.
func errOf(resp any) string {
	switch r := resp.(type) {
	case error:
		return r.Error()
	case []core.AppendOutcome:
		for _, o := range r {
			if o.Err != nil {
				return o.Err.Error()
			}
		}
	}
	return ""
}
