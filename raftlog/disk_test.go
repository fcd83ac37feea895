package raftlog

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/systemtest/rawraftbench"
)

// TestDiskUsage measures what N events of 200 bytes cost on disk, per
// file kind, after a snapshot and the raft log's compaction, and the
// write amplification of getting them there (bytes written to the device
// per byte acknowledged, /proc/self/io): one node, 8 partitions, keys
// key-0 .. key-4095, 64 appenders of ESRAFT_DISK_BATCH events (default
// 16) per append. It runs only when ESRAFT_DISK_EVENTS is set (figures in
// BENCHMARKS.md):
//
//	ESRAFT_DISK_EVENTS=1000000 go test -run TestDiskUsage -v ./raftlog/
func TestDiskUsage(t *testing.T) {
	events, _ := strconv.Atoi(os.Getenv("ESRAFT_DISK_EVENTS"))
	if events <= 0 {
		t.Skip("set ESRAFT_DISK_EVENTS to the number of events")
	}
	batch := 16
	if v, err := strconv.Atoi(os.Getenv("ESRAFT_DISK_BATCH")); err == nil && v > 0 {
		batch = v
	}
	dir := t.TempDir()
	written0, err := rawraftbench.WrittenBytes()
	require.NoError(t, err)
	l := openSingle(t, dir, nil)
	value := rawraftbench.Record()
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i*int64(batch) >= int64(events) {
					return
				}
				recs := make([]NewRecord, min(batch, events-int(i)*batch))
				for j := range recs {
					recs[j].Value = value
				}
				if _, err := l.Append(ctx, fmt.Sprint("key-", i%4096), recs); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	require.False(t, t.Failed())
	for _, s := range l.shards {
		require.NoError(t, s.Raft.Snapshot().Error())
	}
	require.NoError(t, l.Close())
	written1, err := rawraftbench.WrittenBytes()
	require.NoError(t, err)

	kinds := map[string]int64{}
	var total int64
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		used := info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			used = st.Blocks * 512 // allocated, not apparent: raft-wal preallocates
		}
		kinds[diskKind(path)] += used
		total += used
		return nil
	}))
	acked := int64(events) * int64(len(value))
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		t.Logf("%-22s %12d bytes  %6.1f bytes/event  %.2fx", k, kinds[k], float64(kinds[k])/float64(events), float64(kinds[k])/float64(acked))
	}
	t.Logf("%-22s %12d bytes  %6.1f bytes/event  %.2fx", "total", total, float64(total)/float64(events), float64(total)/float64(acked))
	t.Logf("write amplification %.2f (%d bytes written for %d acknowledged)", float64(written1-written0)/float64(acked), written1-written0, acked)
}

// diskKind names the kind of a file of a node's data directory.
func diskKind(path string) string {
	switch {
	case strings.HasSuffix(path, ".seg"):
		return "state segments"
	case filepath.Base(path) == "state.db":
		return "state index"
	case strings.Contains(path, string(filepath.Separator)+walLogDir+string(filepath.Separator)):
		return "raft log"
	case strings.Contains(path, string(filepath.Separator)+"snapshots"+string(filepath.Separator)):
		return "raft snapshots"
	}
	return "other"
}
