package state

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/internal/backoff"
	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/systemtest/wait"
)

// TestIndexCompaction: a compaction copies the index into a smaller file
// with the same buckets, keys and values; the engine reads and applies
// on; a restart opens it; an unfinished compaction's file is removed at
// Open.
func TestIndexCompaction(t *testing.T) {
	defer func(v int64) { compactMinUnused = v }(compactMinUnused)
	compactMinUnused = 0
	path := filepath.Join(t.TempDir(), "state.db")
	open := func() *Engine {
		f, err := Open(Options{Path: path, Partitions: 4, Shards: 1, IDRetention: time.Second, FlushRecords: 500, ScrubRate: -1})
		require.NoError(t, err)
		return f
	}
	f := open()
	idx := uint64(0)
	// Many IDs, pruned by the next flushes once their retention passed:
	// pages freed in the file.
	for i := range 3000 {
		idx++
		f.ApplyBatch([]*raft.Log{entryLog(idx, 0, req(1, fmt.Sprintf("k%d", i%50), -1, i+1))})
	}
	for i := range 500 {
		idx++
		f.ApplyBatch([]*raft.Log{entryLog(idx, int64(10*time.Second), req(0, "later", -1, 10000+i))})
	}
	_, err := f.Flush()
	require.NoError(t, err)
	want := stateHash(t, f)
	view := visible(t, f, 0, "later")
	st, err := os.Stat(path)
	require.NoError(t, err)

	buckets := bucketPaths(t, f)
	res, err := f.CompactIndex(nil, false, 0)
	require.NoError(t, err)
	require.Equal(t, st.Size(), res.Before)
	st2, err := os.Stat(path)
	require.NoError(t, err)
	t.Logf("index %d -> %d bytes", st.Size(), st2.Size())
	require.Less(t, st2.Size(), st.Size(), "the file shrank")
	require.Equal(t, st2.Size(), res.After)
	require.Equal(t, want, stateHash(t, f), "the same keys and values")
	require.Equal(t, buckets, bucketPaths(t, f), "the same buckets, empty ones and sequences included")
	require.Equal(t, view, visible(t, f, 0, "later"))
	idx++
	require.Equal(t, "p0@500 seq501 n1 dup=false idx=3501 ", outcomeString(f.ApplyBatch([]*raft.Log{entryLog(idx, int64(11*time.Second), req(0, "later", -1, 20000))})[0]))
	require.Len(t, visible(t, f, 0, "later"), 501)
	require.NoError(t, f.Close())

	require.NoError(t, os.WriteFile(path+compactSuffix, []byte("unfinished"), 0o600))
	f = open()
	defer f.Close()
	_, err = os.Stat(path + compactSuffix)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Len(t, visible(t, f, 0, "later"), 501)
}

// bucketPaths lists every bucket of f's index with its sequence.
func bucketPaths(t testing.TB, f *Engine) []string {
	t.Helper()
	var out []string
	require.NoError(t, f.view(func(tx *bolt.Tx) error {
		var walk func(prefix string, b *bolt.Bucket) error
		walk = func(prefix string, b *bolt.Bucket) error {
			out = append(out, fmt.Sprintf("%s seq=%d", prefix, b.Sequence()))
			return b.ForEachBucket(func(k []byte) error { return walk(prefix+"/"+string(k), b.Bucket(k)) })
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(string(name), b) })
	}))
	return out
}

// compactEntries returns n entries from raft index from on: two records
// each under 50 keys of 4 partitions, the time 10 ms further at each (with
// an ID retention of 1 s, flushes prune IDs), and at every 97th a
// truncation of a key (flushes erase records).
func compactEntries(from, n int) []*raft.Log {
	var out []*raft.Log
	for i := from; i < from+n; i++ {
		p, key := core.Partition(i%4), fmt.Sprintf("k%d", i%50)
		r := req(p, key, -1, 2*i, 2*i+1)
		if i%97 == 0 {
			r = keyOp(p, key, -1, uint64(i/100+1))
		}
		out = append(out, entryLog(uint64(i), int64(i)*int64(10*time.Millisecond), r))
	}
	return out
}

// applyAll applies entries in batches of 8, as raft's FSM goroutine would.
func applyAll(f *Engine, entries []*raft.Log) {
	for i := 0; i < len(entries); i += 8 {
		f.ApplyBatch(entries[i:min(i+8, len(entries))])
	}
}

// referenceHash is the state of an engine that applied entries and
// flushed, without compactions.
func referenceHash(t *testing.T, entries []*raft.Log) string {
	t.Helper()
	ref := openCompactTest(t, t.TempDir())
	defer ref.Close()
	applyAll(ref, entries)
	_, err := ref.Flush()
	require.NoError(t, err)
	return stateHash(t, ref)
}

func openCompactTest(t *testing.T, dir string) *Engine {
	t.Helper()
	f, err := Open(Options{Path: filepath.Join(dir, "state.db"), Partitions: 4, Shards: 1, IDRetention: time.Second,
		FlushRecords: 300, ScrubRate: -1})
	require.NoError(t, err)
	return f
}

// dbHash hashes every bucket (with its sequence), key and value of db.
func dbHash(t testing.TB, db *bolt.DB) string {
	t.Helper()
	h := sha256.New()
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		var walk func(prefix string, b *bolt.Bucket) error
		walk = func(prefix string, b *bolt.Bucket) error {
			fmt.Fprintf(h, "%s seq=%d\n", prefix, b.Sequence())
			return b.ForEach(func(k, v []byte) error {
				if v == nil {
					return walk(prefix+"/"+string(k), b.Bucket(k))
				}
				fmt.Fprintf(h, "%s %x=%x\n", prefix, k, v)
				return nil
			})
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(string(name), b) })
	}))
	return fmt.Sprintf("%x", h.Sum(nil))
}

// copyDir copies the files under src into dst, as a crash would leave
// them.
func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	}))
}

// TestIndexCompactionCrash: a compaction copies while applies and flushes
// go on (the flushes it records are written to its copy, which then holds
// exactly what the file does), and a crash at any step of the swap leaves
// a directory that opens with the old or the new file, whole: raft's
// entries re-applied on it give the state of a node that never compacted.
func TestIndexCompactionCrash(t *testing.T) {
	const total, first = 3000, 1500
	all := compactEntries(1, total)
	want := referenceHash(t, all)

	// At "snapshot" the copy has begun (state.db.compact exists, not
	// whole) and every flush has ended; at the others writeMu is held.
	for _, step := range []string{"snapshot", "copied", "renamed", "swapped"} {
		t.Run(step, func(t *testing.T) {
			dir, crash := t.TempDir(), t.TempDir()
			f := openCompactTest(t, dir)
			applyAll(f, all[:first])
			_, err := f.Flush()
			require.NoError(t, err)
			// The rest is applied and flushed while the compaction copies:
			// its flushes are recorded.
			applied := make(chan struct{})
			go func() {
				defer close(applied)
				applyAll(f, all[first:])
				_, err := f.Flush()
				assert.NoError(t, err)
			}()
			steps := ""
			f.beforeSwap = func(s string, cp *bolt.DB) error {
				steps += s + " "
				switch s {
				case "snapshot":
					<-applied
					assert.NotEmpty(t, f.compaction.Load().recorded, "flushes recorded during the copy")
				case "copied":
					assert.Equal(t, dbHash(t, f.db.Load()), dbHash(t, cp), "the copy holds what the file does")
				}
				if s == step {
					copyDir(t, dir, crash)
				}
				return nil
			}
			res, err := f.CompactIndex(nil, true, 0)
			require.NoError(t, err)
			require.Equal(t, "snapshot copied renamed swapped ", steps)
			require.Positive(t, res.After)
			require.Equal(t, want, stateHash(t, f), "the compacted engine")
			require.NoError(t, f.Close())

			if step == "snapshot" || step == "copied" {
				require.FileExists(t, filepath.Join(crash, "state.db"+compactSuffix), "the crash left the copy")
			}
			g := openCompactTest(t, crash)
			defer g.Close()
			require.NoFileExists(t, filepath.Join(crash, "state.db"+compactSuffix), "Open removed it")
			applyAll(g, all) // raft hands back what the file does not hold
			_, err = g.Flush()
			require.NoError(t, err)
			require.Equal(t, want, stateHash(t, g), "crashed at %s, then recovered", step)
		})
	}
}

// A compaction that is told to stop, that another writer interrupts, or
// that fails, at any step before the rename, leaves the old file in use,
// whole, and the engine applying and flushing on.
func TestIndexCompactionGivesUp(t *testing.T) {
	all := compactEntries(1, 2000)
	want := referenceHash(t, all)
	for _, step := range []string{"snapshot", "copied"} {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			f := openCompactTest(t, dir)
			defer f.Close()
			applyAll(f, all[:1000])
			_, err := f.Flush()
			require.NoError(t, err)
			before := stateHash(t, f)
			var bg chan struct{} // a drop the writer case started
			for _, c := range []struct {
				name string
				at   func(stop chan struct{}) error
				want string
			}{
				{"stop", func(stop chan struct{}) error { close(stop); return nil }, "asked to stop"},
				{"writer", func(chan struct{}) error {
					if step == "snapshot" { // writeMu is free: the drop runs now
						_, err := f.DropSegments()
						return err
					}
					bg = make(chan struct{}) // the compaction holds writeMu: the drop waits
					go func() {
						defer close(bg)
						_, err := f.DropSegments()
						assert.NoError(t, err)
					}()
					require.Eventually(t, func() bool { return f.writersWaiting.Load() > 0 }, 5*time.Second, time.Millisecond)
					return nil
				}, "another writer"},
				{"fail", func(chan struct{}) error { return errors.New("injected") }, "injected"},
			} {
				stop := make(chan struct{})
				f.beforeSwap = func(s string, _ *bolt.DB) error {
					if s == step {
						return c.at(stop)
					}
					return nil
				}
				_, err = f.CompactIndex(stop, true, 0)
				if bg != nil {
					<-bg
					bg = nil
				}
				require.ErrorContains(t, err, c.want, c.name)
				require.NoFileExists(t, filepath.Join(dir, "state.db"+compactSuffix), c.name)
				require.Equal(t, before, stateHash(t, f), c.name)
				require.Nil(t, f.compaction.Load(), "%s: the run ended", c.name)
			}
			f.beforeSwap = nil
			applyAll(f, all[1000:])
			_, err = f.Flush()
			require.NoError(t, err)
			require.Equal(t, want, stateHash(t, f))
		})
	}
}

// Readers run while compactions swap the file under them and applies and
// flushes go on (run with -race): every read succeeds and sees every
// record applied before it began, and the state ends as without
// compactions.
func TestIndexCompactionWithReaders(t *testing.T) {
	const total = 6000
	all := compactEntries(1, total)
	want := referenceHash(t, all)

	f := openCompactTest(t, t.TempDir())
	defer f.Close()
	applyAll(f, all[:1000])
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var reads atomic.Int64
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				next := f.AppliedSignal().Wait() // a round of reads per apply at most
				p := core.Partition(r)
				floor := f.NextOffset(p) // applied before the read began
				recs, err := f.Read(p, max(floor, 50)-50, 1<<20, 1<<30)
				if !assert.NoError(t, err) {
					return
				}
				if n := len(recs); n > 0 && recs[n-1].Offset+1 < floor {
					t.Errorf("partition %d: read ends at %d, %d were applied before it began", p, recs[n-1].Offset, floor)
					return
				}
				// IDs expire 100 entries after theirs (the retention is 1 s):
				// one of the last entry applied is found.
				if i := int(f.Applied()); i%97 != 0 {
					_, found, err := f.LookupID(testID(2 * i))
					if !assert.NoError(t, err) || !assert.True(t, found, "the ID of entry %d, applied", i) {
						return
					}
				}
				_, err = f.ReadKey(p, fmt.Sprintf("k%d", r), 1, 100, 1<<20)
				if !assert.NoError(t, err) {
					return
				}
				reads.Add(1)
				select {
				case <-next:
				case <-stop:
					return
				}
			}
		}()
	}
	applied := make(chan struct{})
	go func() {
		defer close(applied)
		rest := all[1000:]
		for i := 0; i < len(rest); i += 64 { // few batches: readers hold the tables' lock often
			f.ApplyBatch(rest[i:min(i+64, len(rest))])
		}
	}()
	compactions := 0
	f.beforeSwap = func(s string, cp *bolt.DB) error {
		if s == "copied" {
			assert.Equal(t, dbHash(t, f.db.Load()), dbHash(t, cp), "the copy holds what the file does")
		}
		return nil
	}
	for ; compactions < 5; compactions++ {
		_, err := f.CompactIndex(nil, true, 0)
		require.NoError(t, err)
	}
	<-applied
	close(stop)
	wg.Wait()
	t.Logf("%d compactions, %d rounds of reads", compactions, reads.Load())
	require.Positive(t, reads.Load())
	_, err := f.Flush()
	require.NoError(t, err)
	require.Equal(t, want, stateHash(t, f))
}

// A compaction gives up, the old file whole and in use, when appends
// outpace it (more recorded than compactMaxRecorded: memory stays
// bounded) and when a flush fails (the copy may hold the space flushes
// need); the engine then goes on as if none had run.
func TestIndexCompactionLimits(t *testing.T) {
	defer func(v int) { compactMaxRecorded = v }(compactMaxRecorded)
	defer func(p backoff.Policy) { flushRetry = p }(flushRetry)
	flushRetry.Initial, flushRetry.Max = time.Millisecond, 20*time.Millisecond
	all := compactEntries(1, 2000)
	want := referenceHash(t, all)
	for _, c := range []struct {
		name, want string
		during     func(f *Engine, fs *FaultFS)
	}{
		{"recorded", "appends outpace the copy", func(f *Engine, _ *FaultFS) {
			compactMaxRecorded = 64 << 10
			applyAll(f, all[1000:1500])
			_, err := f.Flush()
			require.NoError(t, err)
			require.Greater(t, f.compaction.Load().recordedSize(), compactMaxRecorded)
		}},
		{"flush fails", "flushes fail", func(f *Engine, fs *FaultFS) {
			fs.Fail.Store(true)
			applyAll(f, all[1000:1500]) // tables freeze; their flushes fail
			wait.Until(t, 10*time.Second, "a failed flush", func() bool { return f.FlushError() != nil })
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			compactMaxRecorded = 128 << 20
			dir, fs := t.TempDir(), NewFaultFS()
			f, err := Open(Options{Path: filepath.Join(dir, "state.db"), Partitions: 4, Shards: 1, IDRetention: time.Second,
				FlushRecords: 300, ScrubRate: -1, FS: fs})
			require.NoError(t, err)
			defer f.Close()
			applyAll(f, all[:1000])
			_, err = f.Flush()
			require.NoError(t, err)
			f.beforeSwap = func(s string, _ *bolt.DB) error {
				if s == "snapshot" {
					c.during(f, fs)
				}
				return nil
			}
			_, err = f.CompactIndex(nil, true, 0)
			require.ErrorContains(t, err, c.want)
			require.NoFileExists(t, filepath.Join(dir, "state.db"+compactSuffix))
			require.Nil(t, f.compaction.Load(), "nothing recorded is kept")
			fs.Fail.Store(false)
			wait.Until(t, 10*time.Second, "flushes that succeed", func() bool { return f.FlushError() == nil })
			applyAll(f, all[1500:])
			_, err = f.Flush()
			require.NoError(t, err)
			require.Equal(t, want, stateHash(t, f))
		})
	}
}
