package faulttest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCompareDigestsNamesTheFirstDifferingWindow(t *testing.T) {
	line := func(shard, from, to, digest string) string {
		return `time=2026-11-30T01:00:00.000000Z level=INFO msg="raftlog: apply digest" shard=` + shard + ` from=` + from + ` to=` + to + ` digest=` + digest + "\n"
	}
	logs := [][]byte{
		[]byte(line("0", "1", "1024", "11") + "other line\n" + line("0", "1025", "2048", "12") + line("1", "1", "1024", "21")),
		[]byte(line("0", "1", "1024", "11") + line("0", "1025", "2048", "99") + line("1", "1", "1024", "21")),
		[]byte(line("0", "2049", "3072", "13") + line("1", "1", "1024", "21") + line("1", "1", "1024", "22")),
	}
	got := compareDigests(logs)
	require.Equal(t, 3, got.Windows) // 0/1-1024, 0/1025-2048, 1/1-1024; 0/2049-3072 has one digest only
	require.Equal(t, 2, got.Differ)
	require.Equal(t, []string{
		"shard 1 raft indexes 1-1024: [n1 21 n2 21 n3 21 n3 22]",
		"shard 0 raft indexes 1025-2048: [n1 12 n2 99]",
	}, got.First)
	require.Equal(t, ApplyDigests{}, compareDigests([][]byte{[]byte(line("0", "1", "1024", "11"))}))
}
