package state

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// digestLines applies entries in the given batches to an engine that
// logs a digest every 4 entries, reopening it (a restart) before each
// batch that follows a nil one, and returns the digest lines it logged as
// "from-to:digest".
func digestLines(t *testing.T, batches ...[]*raft.Log) []string {
	var buf bytes.Buffer
	path := filepath.Join(t.TempDir(), "state.db")
	open := func() *Engine {
		e, err := Open(Options{Path: path, Partitions: 2, Shards: 1, ScrubRate: -1,
			DigestEvery: 4, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
		require.NoError(t, err)
		return e
	}
	e := open()
	for _, b := range batches {
		if b == nil {
			require.NoError(t, e.Close())
			e = open()
			continue
		}
		e.ApplyBatch(b)
	}
	require.NoError(t, e.Close())
	var out []string
	for _, m := range regexp.MustCompile(`apply digest" from=(\d+) to=(\d+) digest=(\d+)`).FindAllStringSubmatch(buf.String(), -1) {
		out = append(out, m[1]+"-"+m[2]+":"+m[3])
	}
	return out
}

// TestApplyDigestNamesTheWindowDecidedDifferently: replicas that apply the
// same entries log the same digests, however raft batches them; a replica
// that decided one entry differently (here, its state held a record the
// other's did not, so a conditional append was refused) logs a different
// digest for that window only, and a window it did not apply whole is not
// logged.
func TestApplyDigestNamesTheWindowDecidedDifferently(t *testing.T) {
	entries := func(first uint64, expect int64) []*raft.Log {
		var out []*raft.Log
		for i := uint64(0); i < 8; i++ {
			e := int64(-1)
			if i == 5 {
				e = expect
			}
			out = append(out, entryLog(first+i, int64(first+i), req(core.Partition(i%2), "k", e, int(first+i))))
		}
		return out
	}
	all := entries(1, 2) // entry 6 expects key k at sequence 2: it is
	one := digestLines(t, all)
	require.Len(t, one, 2)
	require.Equal(t, []string{"1-4", "5-8"}, []string{one[0][:3], one[1][:3]})
	require.Equal(t, one, digestLines(t, all[:3], all[3:6], all[6:]), "the same entries in other batches")

	other := entries(1, 3) // entry 6 is refused here
	two := digestLines(t, other)
	require.Equal(t, one[0], two[0], "the window before the difference")
	require.NotEqual(t, one[1], two[1], "the window of the entry decided differently")

	// Raft hands the FSM commands only: a window whose last index is a
	// no-op or a barrier ends with the next command, alike however the
	// commands are batched.
	gaps := append(append([]*raft.Log{}, all[:3]...), all[4:7]...) // indexes 4 and 8 are not commands
	g := digestLines(t, gaps)
	require.Len(t, g, 1, "window 5-8 ends with no command past it")
	require.Equal(t, "1-4", g[0][:3])
	require.NotEqual(t, one[0], g[0])
	require.Equal(t, g, digestLines(t, gaps[:3], gaps[3:]))

	// Restarted after entry 2: the first window is not applied whole by
	// one process, so only the second is logged.
	require.Equal(t, one[1:], digestLines(t, all[:2], nil, all[2:]))
	// Restarted after entry 6, raft handing entries 5 and 6 again (the
	// state file holds them): they are not applied or folded twice, and
	// the window they are in is not logged.
	require.Equal(t, one[:1], digestLines(t, all[:6], nil, all[4:]))
}
