package raftlog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/route"
	"github.com/esraft/esraft/raftlog/internal/state"
	"github.com/esraft/esraft/raftlog/internal/wire"
	"github.com/esraft/esraft/systemtest/wait"
)

// Multi-node tests over real TCP (see harness_test.go). Helpers here are
// prefixed with ct so they cannot collide with other test files.

// ctAck is one acknowledged record: where its AppendResult said it went and
// what was sent.
type ctAck struct {
	key       string
	partition Partition
	offset    uint64
	keySeq    uint64
	time      time.Time
	group     Shard // Position.Shard of the result, -1 if unknown
	rec       NewRecord
}

// ctAcks collects acknowledged records, safe for concurrent use.
type ctAcks struct {
	mu sync.Mutex
	m  map[uuid.UUID]ctAck
}

func newCtAcks() *ctAcks { return &ctAcks{m: map[uuid.UUID]ctAck{}} }

// add records the acknowledgement of a whole batch. It reports an error if
// a record ID was acknowledged before at another place.
func (a *ctAcks) add(key string, recs []NewRecord, res AppendResult, group Shard) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, r := range recs {
		ack := ctAck{
			key: key, partition: res.Partition, offset: res.FirstOffset + uint64(i),
			keySeq: res.FirstKeySeq + uint64(i), time: res.Time, group: group, rec: r,
		}
		if old, ok := a.m[r.ID]; ok {
			if old.partition != ack.partition || old.offset != ack.offset || old.keySeq != ack.keySeq || !old.time.Equal(ack.time) {
				return fmt.Errorf("record %s acknowledged twice at different places: %+v then %+v", r.ID, old, ack)
			}
			continue
		}
		a.m[r.ID] = ack
	}
	return nil
}

func (a *ctAcks) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.m)
}

// ctRecords makes n records with fresh explicit IDs; values name the key
// and the key sequence they are meant to take.
func ctRecords(key string, firstSeq uint64, n int) []NewRecord {
	recs := make([]NewRecord, n)
	for i := range recs {
		recs[i] = NewRecord{ID: uuid.New(), Value: []byte(fmt.Sprintf("%s/%d", key, firstSeq+uint64(i)))}
		if n > 1 {
			recs[i].Headers = []Header{{Key: "batch", Value: []byte(recs[0].ID.String())}, {Key: "i", Value: []byte{byte(i)}}}
		}
	}
	return recs
}

func ctIDs(recs []NewRecord) []uuid.UUID {
	ids := make([]uuid.UUID, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	return ids
}

// ctRunning returns the indexes of the running nodes.
func ctRunning(c *testCluster) []int {
	var out []int
	for i := range c.nodes {
		if c.node(i) != nil {
			out = append(out, i)
		}
	}
	return out
}

// ctRetryable reports whether err leaves the outcome of an append open (or
// says it was not applied), so that the client must retry it with the same
// record IDs and the same expectation.
func ctRetryable(err error) bool {
	return errors.Is(err, ErrUnknownOutcome) || errors.Is(err, ErrNoLeader) || errors.Is(err, ErrClosed)
}

func ctSameHeaders(a, b []Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func ctSameRecord(a, b Record) bool {
	return a.Partition == b.Partition && a.Offset == b.Offset && a.Key == b.Key && a.KeySeq == b.KeySeq &&
		a.ID == b.ID && a.Time.Equal(b.Time) && ctSameHeaders(a.Headers, b.Headers) && bytes.Equal(a.Value, b.Value)
}

// ctRequireSameRecords fails unless want and got are the same records.
func ctRequireSameRecords(t testing.TB, what string, want, got []Record) {
	t.Helper()
	require.Equal(t, len(want), len(got), "%s: number of records", what)
	for i := range want {
		if !ctSameRecord(want[i], got[i]) {
			require.Failf(t, "records differ", "%s: index %d:\n%+v\n%+v", what, i, want[i], got[i])
		}
	}
}

// ctVerifyNodes checks every running node (at least min of them) against
// the acknowledgements: per partition, offsets dense from 0 and key
// sequences dense from 1 per key; no record ID twice; every acknowledged
// record exactly where its result said, with what was sent; no record that
// was never acknowledged; every node holding identical records.
func ctVerifyNodes(t *testing.T, c *testCluster, acks *ctAcks, minNodes int) {
	t.Helper()
	acks.mu.Lock()
	defer acks.mu.Unlock()
	running := ctRunning(c)
	require.GreaterOrEqual(t, len(running), minNodes, "running nodes")
	finalSeq := map[[2]string]uint64{} // partition, key -> highest acknowledged key sequence
	for _, a := range acks.m {
		k := [2]string{strconv.Itoa(int(a.partition)), a.key}
		finalSeq[k] = max(finalSeq[k], a.keySeq)
	}
	var ref [][]Record
	for _, i := range running {
		l := c.node(i)
		who := c.nodes[i].id
		seen := map[uuid.UUID]Record{}
		var parts [][]Record
		for p := Partition(0); int(p) < l.Partitions(); p++ {
			recs := readAll(t, l, p)
			keySeq := map[string]uint64{}
			for j, r := range recs {
				require.Equal(t, uint64(j), r.Offset, "%s: partition %d: offsets must be dense from 0", who, p)
				require.Equal(t, p, r.Partition, "%s: partition of record at %d", who, j)
				require.Equal(t, p, l.Partition(r.Key), "%s: key %q stored in partition %d", who, r.Key, p)
				prev, dup := seen[r.ID]
				require.False(t, dup, "%s: record ID %s twice: %+v and %+v", who, r.ID, prev, r)
				seen[r.ID] = r
				keySeq[r.Key]++
				require.Equal(t, keySeq[r.Key], r.KeySeq, "%s: partition %d offset %d: key %q sequences must be dense from 1", who, p, j, r.Key)
			}
			for key, n := range keySeq {
				require.Equal(t, finalSeq[[2]string{strconv.Itoa(int(p)), key}], n, "%s: key %q holds %d records", who, key, n)
				got, err := l.KeySeq(context.Background(), p, key)
				require.NoError(t, err)
				require.Equal(t, n, got, "%s: KeySeq of %q", who, key)
			}
			parts = append(parts, recs)
		}
		require.Len(t, seen, len(acks.m), "%s: every record must have been acknowledged, every acknowledged record present", who)
		for id, a := range acks.m {
			r, ok := seen[id]
			require.True(t, ok, "%s: acknowledged record %s (key %q) is missing", who, id, a.key)
			require.Equal(t, a.partition, r.Partition, "%s: %s partition", who, id)
			require.Equal(t, a.offset, r.Offset, "%s: %s offset", who, id)
			require.Equal(t, a.keySeq, r.KeySeq, "%s: %s key sequence", who, id)
			require.Equal(t, a.key, r.Key, "%s: %s key", who, id)
			require.True(t, a.time.Equal(r.Time), "%s: %s time %v, acknowledged %v", who, id, r.Time, a.time)
			require.True(t, bytes.Equal(a.rec.Value, r.Value), "%s: %s value", who, id)
			require.True(t, ctSameHeaders(a.rec.Headers, r.Headers), "%s: %s headers", who, id)
			if a.group >= 0 {
				require.Equal(t, l.ShardOf(a.partition), a.group, "%s: %s acknowledged from group %d", who, id, a.group)
			}
		}
		if ref == nil {
			ref = parts
			continue
		}
		for p := range parts {
			ctRequireSameRecords(t, fmt.Sprintf("partition %d on %s vs %s", p, c.nodes[running[0]].id, who), ref[p], parts[p])
		}
	}
}

// ctWorkload is the concurrent conditional-append workload of
// TestClusterLeaderStopsDuringAppends and TestClusterGroups3: each key
// belongs to one goroutine, which appends with ExpectKeySeq set to the
// key's acknowledged sequence, so every expectation is exact.
type ctWorkload struct {
	c       *testCluster
	workers int
	keys    []string
	appends int
	acks    *ctAcks

	acked    atomic.Int64 // appends acknowledged
	retries  atomic.Int64 // attempts repeated after an open outcome
	unknown  atomic.Int64 // ... of which the error wrapped ErrUnknownOutcome
	dups     atomic.Int64 // acknowledgements with Duplicate set
	resolved atomic.Int64 // KeySeqErrors resolved by finding our own records
}

// ctRunWorkload runs the workload on c. If stopGroup >= 0 the leader of that
// group is stopped after a third of the appends and restarted after two
// thirds; with crash set it is first cut off from the other nodes, so that
// what it had in flight is left in doubt as in a crash (Close alone lets
// in-flight entries finish). It returns once every append is acknowledged
// and the replicas have converged.
func ctRunWorkload(t *testing.T, c *testCluster, stopGroup int, crash bool) *ctWorkload {
	w := &ctWorkload{c: c, workers: 16, appends: 3000, acks: newCtAcks()}
	for k := 0; k < 200; k++ {
		w.keys = append(w.keys, fmt.Sprintf("key-%03d", k))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	start := time.Now()
	for i := 0; i < w.workers; i++ {
		n := w.appends / w.workers
		if i < w.appends%w.workers {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.worker(ctx, i, n); err != nil {
				t.Errorf("worker %d: %v", i, err)
			}
		}()
	}
	if stopGroup >= 0 {
		third := int64(w.appends / 3)
		wait.Until(t, 2*time.Minute, "a third of the appends", func() bool { return w.acked.Load() >= third || t.Failed() })
		if t.Failed() {
			t.FailNow()
		}
		li := c.leader(stopGroup)
		t.Logf("stopping %s, leader of group %d, after %d appends (%v, crash %v)", c.nodes[li].id, stopGroup, w.acked.Load(), time.Since(start), crash)
		if crash {
			var others []int
			for i := range c.nodes {
				if i != li {
					others = append(others, i)
				}
			}
			c.net.Isolate(c.nodes[li].addr, c.addrs(others...))
		}
		c.stop(li)
		c.net.Heal()
		wait.Until(t, 2*time.Minute, "two thirds of the appends", func() bool { return w.acked.Load() >= 2*third || t.Failed() })
		if t.Failed() {
			t.FailNow()
		}
		t.Logf("restarting %s after %d appends (%v)", c.nodes[li].id, w.acked.Load(), time.Since(start))
		c.restart(li)
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	require.Equal(t, int64(w.appends), w.acked.Load())
	t.Logf("%d appends (%d records) acknowledged in %v: %d retries (%d of unknown outcome), %d duplicates, %d key-sequence conflicts resolved",
		w.acked.Load(), w.acks.len(), time.Since(start), w.retries.Load(), w.unknown.Load(), w.dups.Load(), w.resolved.Load())
	if stopGroup >= 0 && crash {
		require.Positive(t, w.retries.Load()+w.dups.Load(), "the crash left no append in doubt: the scenario did not work")
	}
	c.converged()
	return w
}

func (w *ctWorkload) worker(ctx context.Context, id, n int) error {
	r := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	var mine []string
	for k := id; k < len(w.keys); k += w.workers {
		mine = append(mine, w.keys[k])
	}
	seq := map[string]uint64{} // acknowledged sequence of each of my keys
	for i := 0; i < n; i++ {
		key := mine[r.IntN(len(mine))]
		size := 1
		if r.IntN(5) == 0 {
			size = 3
		}
		recs := ctRecords(key, seq[key]+1, size)
		res, group, err := w.appendUntilKnown(ctx, r, key, recs, seq[key])
		if err != nil {
			return fmt.Errorf("key %q at sequence %d: %w", key, seq[key], err)
		}
		if err := w.acks.add(key, recs, res, group); err != nil {
			return err
		}
		seq[key] += uint64(size)
		w.acked.Add(1)
	}
	return nil
}

// appendUntilKnown appends recs under key expecting the key at sequence
// expect, to random running nodes, until the outcome is known. group is
// the result's Position.Shard, -1 if the result was reconstructed.
func (w *ctWorkload) appendUntilKnown(ctx context.Context, r *rand.Rand, key string, recs []NewRecord, expect uint64) (AppendResult, Shard, error) {
	n := uint64(len(recs))
	var lastErr error
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return AppendResult{}, 0, fmt.Errorf("gave up after %d attempts (last error: %v): %w", attempt, lastErr, ctx.Err())
		}
		running := ctRunning(w.c)
		l := w.c.node(running[r.IntN(len(running))])
		if l == nil {
			continue // stopped meanwhile
		}
		p := l.Partition(key)
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := l.Append(actx, key, recs, ExpectKeySeq(expect))
		cancel()
		var kse *KeySeqError
		switch {
		case err == nil:
			if res.Partition != p || res.Count != len(recs) || res.FirstKeySeq != expect+1 {
				return res, 0, fmt.Errorf("append of %d records expecting sequence %d acknowledged as %+v", n, expect, res)
			}
			if res.Duplicate {
				w.dups.Add(1)
			}
			return res, res.Position.Shard, nil
		case errors.As(err, &kse):
			// The key belongs to this goroutine alone, so its sequence can
			// only have moved past expect through an earlier attempt of
			// this very batch that committed after all. (The log
			// deduplicates before it checks the expectation, so a retry
			// normally sees Duplicate instead; this is the client's
			// fallback.) It must then hold exactly our records, which we
			// look up instead of counting the batch as lost.
			if attempt == 0 || lastErr == nil {
				return AppendResult{}, 0, fmt.Errorf("first attempt failed: %w", err)
			}
			if kse.Actual != expect+n {
				return AppendResult{}, 0, fmt.Errorf("after an open outcome (%v): %w (want actual %d: a write was lost or foreign)", lastErr, err, expect+n)
			}
			res, err := ctFindBatch(ctx, w.c, p, key, expect+1, recs)
			if err != nil {
				return AppendResult{}, 0, err
			}
			w.resolved.Add(1)
			return res, -1, nil
		case ctRetryable(err):
			lastErr = err
			w.retries.Add(1)
			if errors.Is(err, ErrUnknownOutcome) {
				w.unknown.Add(1)
			}
		default:
			return AppendResult{}, 0, fmt.Errorf("attempt %d (previous error: %v): %w", attempt, lastErr, err)
		}
	}
}

// ctFindBatch reads key back from fromSeq on a running node that has
// applied at least that far, and checks that it holds exactly recs, in
// consecutive offsets. It returns the result the append would have had.
func ctFindBatch(ctx context.Context, c *testCluster, p Partition, key string, fromSeq uint64, recs []NewRecord) (AppendResult, error) {
	last := fromSeq + uint64(len(recs)) - 1
	for {
		for _, i := range ctRunning(c) {
			l := c.node(i)
			if l == nil {
				continue
			}
			if seq, err := l.KeySeq(ctx, p, key); err != nil || seq < last {
				continue
			}
			got, err := l.ReadKey(ctx, p, key, fromSeq, ReadOptions{MaxRecords: len(recs)})
			if err != nil {
				continue
			}
			if len(got) != len(recs) {
				return AppendResult{}, fmt.Errorf("key %q from sequence %d: read %d records, want %d", key, fromSeq, len(got), len(recs))
			}
			for j := range got {
				if got[j].ID != recs[j].ID || got[j].KeySeq != fromSeq+uint64(j) || got[j].Offset != got[0].Offset+uint64(j) {
					return AppendResult{}, fmt.Errorf("key %q sequence %d holds %+v, not our record %s", key, fromSeq+uint64(j), got[j], recs[j].ID)
				}
			}
			return AppendResult{Partition: p, FirstOffset: got[0].Offset, FirstKeySeq: fromSeq, Count: len(got), Time: got[0].Time, Duplicate: true}, nil
		}
		select {
		case <-ctx.Done():
			return AppendResult{}, fmt.Errorf("looking up key %q: %w", key, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestClusterLeaderStopsDuringAppends stops the leader in the middle of a
// concurrent conditional-append workload, restarts it, and checks that
// every node holds exactly the acknowledged records, once each, where
// their results said, and the same records.
func TestClusterLeaderStopsDuringAppends(t *testing.T) {
	longTest(t)
	c := newCluster(t, 3, nil)
	c.leader(0)
	w := ctRunWorkload(t, c, 0, true)
	ctVerifyNodes(t, c, w.acks, 3)
}

// TestClusterGroups3 spreads the leaders of three raft groups over three
// nodes, then runs the same workload (stopping the node that leads group
// 0) and checks, besides the same properties, that each partition lives
// only in its group.
func TestClusterGroups3(t *testing.T) {
	longTest(t)
	const groups, partitions = 3, 8
	c := newCluster(t, 3, func(cfg *Config) { cfg.Shards, cfg.Partitions = groups, partitions })
	for g := 0; g < groups; g++ {
		target := c.nodes[g].id
		wait.Until(t, 30*time.Second, fmt.Sprintf("%s to lead group %d", target, g), func() bool {
			li := c.leader(g)
			if li == g {
				return true
			}
			if err := c.node(li).TransferLeadership(Shard(g), target); err != nil {
				t.Logf("transfer group %d from %s to %s: %v", g, c.nodes[li].id, target, err)
			}
			return false
		})
	}
	leaders := map[int]bool{}
	for g := 0; g < groups; g++ {
		leaders[c.leader(g)] = true
	}
	require.Len(t, leaders, groups, "each group led by a different node")

	w := ctRunWorkload(t, c, 0, false)
	ctVerifyNodes(t, c, w.acks, 3)

	// Each partition's records are in its group's state only.
	perGroup := make([]int, groups)
	for _, a := range w.acks.m {
		perGroup[a.partition%groups]++
	}
	for _, i := range ctRunning(c) {
		l := c.node(i)
		for g := 0; g < groups; g++ {
			var parts []int
			ids := 0
			ctFlush(t, l, g)
			err := l.shards[g].engine.Probe().View(func(tx *bolt.Tx) error {
				if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
					if len(name) == 5 && name[0] == 'p' {
						parts = append(parts, int(binary.BigEndian.Uint32(name[1:])))
					}
					return nil
				}); err != nil {
					return err
				}
				return nil
			})
			require.NoError(t, err)
			err = l.shards[g].engine.Probe().EachID(func(id uuid.UUID, p Partition) error {
				if int(p)%groups != g {
					return fmt.Errorf("shard %d remembers record %s of partition %d", g, id, p)
				}
				ids++
				return nil
			})
			require.NoError(t, err, "%s group %d", c.nodes[i].id, g)
			var want []int
			for p := g; p < partitions; p += groups {
				want = append(want, p)
			}
			require.ElementsMatch(t, want, parts, "%s: partitions stored in group %d", c.nodes[i].id, g)
			require.Equal(t, perGroup[g], ids, "%s: records of group %d", c.nodes[i].id, g)
		}
	}
}

// ctMustAppend appends through node i and records the acknowledgement.
func ctMustAppend(t *testing.T, c *testCluster, acks *ctAcks, i int, key string, recs []NewRecord, opts ...AppendOption) AppendResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.node(i).Append(ctx, key, recs, opts...)
	require.NoError(t, err, "append %q through %s", key, c.nodes[i].id)
	require.Equal(t, len(recs), res.Count)
	require.NoError(t, acks.add(key, recs, res, res.Position.Shard))
	return res
}

// ctBucketDigests digests every bucket of group g's state on l except the
// per-replica meta bucket: name -> record count and SHA-256 of the raw
// keys and values; and every segment file: name -> length and SHA-256
// (replicas' segments are byte-identical).
// ctFlush makes group g's state file on l hold everything applied: a
// snapshot flushes the in-memory table; "nothing new" means the last
// snapshot already covered everything applied.
func ctFlush(t *testing.T, l *Log, g int) {
	t.Helper()
	if err := l.shards[g].Raft.Snapshot().Error(); !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		require.NoError(t, err)
	}
}

func ctBucketDigests(t *testing.T, l *Log, g int) map[string]string {
	t.Helper()
	ctFlush(t, l, g)
	out := map[string]string{}
	var walk func(path string, b *bolt.Bucket) error
	walk = func(path string, b *bolt.Bucket) error {
		h := sha256.New()
		n := 0
		err := b.ForEach(func(k, v []byte) error {
			if v == nil {
				return walk(path+"/"+string(k), b.Bucket(k))
			}
			h.Write(binary.AppendUvarint(nil, uint64(len(k))))
			h.Write(k)
			h.Write(binary.AppendUvarint(nil, uint64(len(v))))
			h.Write(v)
			n++
			return nil
		})
		out[path] = fmt.Sprintf("%d:%x", n, h.Sum(nil))
		return err
	}
	err := l.shards[g].engine.Probe().View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if bytes.Equal(name, l.shards[g].engine.Probe().MetaBucket()) {
				return nil
			}
			return walk(fmt.Sprintf("%q", name), b)
		})
	})
	require.NoError(t, err)
	segs, err := l.shards[g].engine.Probe().SegmentDigests()
	require.NoError(t, err)
	for name, d := range segs {
		out["segment "+name] = d
	}
	return out
}

// ctFollowerBehindCompaction starts 3 nodes that snapshot often, appends
// a little, stops a follower, has more append through the others, and
// snapshots them until their logs no longer hold the entries the follower
// lacks. It returns the leader then and the stopped follower with its
// applied index when it stopped.
func ctFollowerBehindCompaction(t *testing.T, more func(c *testCluster, acks *ctAcks, li int)) (c *testCluster, acks *ctAcks, li, f int, prevApplied uint64) {
	t.Helper()
	c = newCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotThreshold = 64
		cfg.TrailingLogs = 32
		cfg.WALSegmentBytes = 16 << 10 // compaction drops whole segments
	})
	acks = newCtAcks()
	li = c.leader(0)
	f = (li + 1) % 3
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("early-%d", i%5)
		ctMustAppend(t, c, acks, li, key, ctRecords(key, 0, 2))
	}
	c.converged()
	prevApplied = appliedIndex(t, c.node(f), 0)
	prevLast := c.node(f).shards[0].Raft.LastIndex()
	t.Logf("stopping follower %s at applied index %d, last log index %d", c.nodes[f].id, prevApplied, prevLast)
	c.stop(f)
	more(c, acks, li)
	if t.Failed() {
		t.FailNow()
	}
	for _, i := range ctRunning(c) {
		require.NoError(t, c.node(i).shards[0].Raft.Snapshot().Error(), "snapshot on %s", c.nodes[i].id)
	}
	li = c.leader(0)
	first, err := c.node(li).shards[0].store.FirstIndex()
	require.NoError(t, err)
	t.Logf("leader %s: first log index %d, last %d", c.nodes[li].id, first, c.node(li).shards[0].Raft.LastIndex())
	require.Greater(t, first, prevLast+1, "the leader's log must no longer hold the entries the follower lacks")
	require.Greater(t, first, prevApplied+1)
	var entry raft.Log
	require.Error(t, c.node(li).shards[0].store.GetLog(prevApplied+1, &entry), "the leader's log store must no longer hold index %d", prevApplied+1)
	return c, acks, li, f, prevApplied
}

// TestFollowerCatchesUpBySnapshot stops a follower, appends until the
// others have compacted the entries it lacks away, and checks that it
// catches up by installing a snapshot, to state identical with theirs.
func TestFollowerCatchesUpBySnapshot(t *testing.T) {
	// Many raft entries: 4 writers each appending batches of 10 one by one.
	c, acks, li, f, prevApplied := ctFollowerBehindCompaction(t, func(c *testCluster, acks *ctAcks, _ int) {
		var wg sync.WaitGroup
		for wr := 0; wr < 4; wr++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				running := ctRunning(c)
				for i := 0; i < 75; i++ {
					key := fmt.Sprintf("w%d-k%d", wr, i%7)
					recs := ctRecords(key, 0, 10)
					l := c.node(running[i%len(running)])
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					res, err := l.Append(ctx, key, recs)
					cancel()
					if err != nil {
						t.Errorf("append %q: %v", key, err)
						return
					}
					if err := acks.add(key, recs, res, res.Position.Shard); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	})
	var err error
	c.restart(f)
	c.converged()
	// Raft records the installed snapshot's index just after the FSM's
	// Restore returns, which is what let converged() pass: poll for it.
	var snapIdx uint64
	wait.Until(t, 10*time.Second, "the follower to record an installed snapshot", func() bool {
		stats := c.node(f).shards[0].Raft.Stats()
		snapIdx, err = strconv.ParseUint(stats["last_snapshot_index"], 10, 64)
		require.NoError(t, err, "last_snapshot_index %q", stats["last_snapshot_index"])
		return snapIdx > prevApplied
	})
	t.Logf("follower %s: last_snapshot_index %d, applied %d", c.nodes[f].id, snapIdx, appliedIndex(t, c.node(f), 0))
	require.GreaterOrEqual(t, appliedIndex(t, c.node(f), 0), snapIdx)

	// The follower takes entries after the snapshot into its own log. Its
	// log held an older range that ends below the snapshot; raft-wal
	// refuses a gap, so raft must have emptied it on the install (it does
	// only for a log store that says it is monotonic): before that was
	// passed through, every later entry failed with "non-monotonic log
	// entries" and the follower never applied again (fault run seed
	// 20261133).
	for i := 0; i < 5; i++ {
		key := fmt.Sprintf("after-%d", i)
		ctMustAppend(t, c, acks, li, key, ctRecords(key, 0, 2))
	}
	c.converged()

	ctVerifyNodes(t, c, acks, 3)
	want := ctBucketDigests(t, c.node(li), 0)
	require.NotEmpty(t, want)
	for _, i := range ctRunning(c) {
		require.Equal(t, want, ctBucketDigests(t, c.node(i), 0), "state of %s vs leader %s", c.nodes[i].id, c.nodes[li].id)
	}
}

// ctIDOnAnyNode reports the running nodes whose state remembers id.
func ctIDOnAnyNode(t *testing.T, c *testCluster, id uuid.UUID) []string {
	t.Helper()
	var where []string
	for _, i := range ctRunning(c) {
		l := c.node(i)
		for _, s := range l.shards {
			_, found, err := s.engine.Probe().LookupID(id)
			require.NoError(t, err)
			if found {
				where = append(where, c.nodes[i].id)
			}
		}
	}
	return where
}

// TestIsolatedLeaderCannotAcknowledge isolates the leader: an append it
// is given must fail without ever being committed, while the majority
// elects a new leader and goes on.
func TestIsolatedLeaderCannotAcknowledge(t *testing.T) {
	longTest(t)
	c := newCluster(t, 3, nil)
	acks := newCtAcks()
	L := c.leader(0)
	var others []int
	for i := range c.nodes {
		if i != L {
			others = append(others, i)
		}
	}
	ctMustAppend(t, c, acks, others[0], "before", ctRecords("before", 1, 1))
	c.converged()

	c.net.Isolate(c.nodes[L].addr, c.addrs(others...))
	lost := ctRecords("isolated", 1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	start := time.Now()
	res, err := c.node(L).Append(ctx, "isolated", lost)
	cancel()
	t.Logf("append on isolated %s: %v after %v", c.nodes[L].id, err, time.Since(start))
	require.Error(t, err, "an isolated leader acknowledged %+v", res)
	require.ErrorIs(t, err, ErrNoLeader)

	nl := c.leader(0, others...)
	require.NotEqual(t, L, nl)
	via := others[0]
	if via == nl {
		via = others[1]
	}
	ok := ctMustAppend(t, c, acks, via, "majority", ctRecords("majority", 1, 1))
	require.False(t, ok.Duplicate)

	c.net.Heal()
	c.converged()
	wait.Until(t, 20*time.Second, c.nodes[L].id+" to follow again", func() bool {
		r := c.node(L).shards[0].Raft
		_, id := r.LeaderWithID()
		return r.State() == raft.Follower && id != "" && id != raft.ServerID(c.nodes[L].id)
	})
	c.converged()
	require.Empty(t, ctIDOnAnyNode(t, c, lost[0].ID), "the isolated leader's record was committed")
	for _, i := range ctRunning(c) {
		seq, err := c.node(i).KeySeq(context.Background(), c.node(i).Partition("isolated"), "isolated")
		require.NoError(t, err)
		require.Zero(t, seq, "key of the isolated append on %s", c.nodes[i].id)
	}
	ctVerifyNodes(t, c, acks, 3) // the majority's record everywhere, nothing else
}

// TestRetryAfterUnknownOutcome produces appends of unknown outcome, some
// committed and some not, and retries each with the same IDs: every batch
// ends up in the log exactly once, retries of committed batches come back
// as duplicates with the original offsets.
func TestRetryAfterUnknownOutcome(t *testing.T) {
	longTest(t)
	// Group commit lingers longer than the short deadlines below, so an
	// append handed to the leader is still pending when its caller gives
	// up: its outcome is unknown to the caller, and it commits afterwards.
	const linger = 150 * time.Millisecond
	c := newCluster(t, 3, func(cfg *Config) { cfg.Linger = linger })
	acks := newCtAcks()
	L := c.leader(0)
	F, G := (L+1)%3, (L+2)%3
	ctMustAppend(t, c, acks, F, "warm-f", ctRecords("warm-f", 1, 1)) // F's connection to L is up
	ctMustAppend(t, c, acks, L, "warm-l", ctRecords("warm-l", 1, 1))

	type batch struct {
		phase byte
		via   int
		key   string
		recs  []NewRecord
		err   error
		// acked: the call returned success. Possible only in phases C and E,
		// where a call can join a batch whose linger is nearly over and the
		// commit can race the deadline; res is then the acknowledgement.
		acked bool
		res   AppendResult
	}
	var batches []*batch
	unknown := 0
	// run appends bs concurrently, each with its own key expected new.
	run := func(bs []*batch, timeout time.Duration) {
		var wg sync.WaitGroup
		for _, b := range bs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				b.res, b.err = c.node(b.via).Append(ctx, b.key, b.recs, ExpectKeySeq(0))
				b.acked = b.err == nil
			}()
		}
		wg.Wait()
		for _, b := range bs {
			if b.acked {
				require.Contains(t, "CE", string(b.phase), "batch %q through %s acknowledged: %+v", b.key, c.nodes[b.via].id, b.res)
				continue
			}
			require.ErrorIs(t, b.err, ErrNoLeader, "phase %c batch %q through %s", b.phase, b.key, c.nodes[b.via].id)
			if errors.Is(b.err, ErrUnknownOutcome) {
				unknown++
			}
		}
		batches = append(batches, bs...)
	}
	newBatch := func(phase byte, via, i int) *batch {
		key := fmt.Sprintf("%c-%d", phase, i)
		return &batch{phase: phase, via: via, key: key, recs: ctRecords(key, 1, 1+i%3)}
	}

	// Phase A: hand appends to the leader, directly and through a
	// follower, and give up before group commit proposes them.
	var bs []*batch
	for i := 0; i < 24; i++ {
		via := L
		if i%2 == 0 {
			via = F
		}
		bs = append(bs, newBatch('A', via, i))
	}
	run(bs, linger/3)
	unknownA := unknown
	t.Logf("phase A: %d of %d appends of unknown outcome", unknownA, len(bs))
	require.Positive(t, unknownA)
	// Appends queue on the leader in order: once this one is applied, so
	// are the abandoned ones handed to it directly.
	ctMustAppend(t, c, acks, L, "barrier-a", ctRecords("barrier-a", 1, 1))

	// Phase B: isolate the leader, then hand it appends while it still
	// believes it leads. They can never commit.
	c.net.Isolate(c.nodes[L].addr, c.addrs(F, G))
	bs = nil
	for i := 0; i < 8; i++ {
		bs = append(bs, newBatch('B', L, i))
	}
	run(bs, 2*time.Second)
	t.Logf("phase B: %d of %d appends of unknown outcome", unknown-unknownA, len(bs))
	nl := c.leader(0, F, G)
	// A commit in the new leader's term: the isolated leader's log can no
	// longer win an election, so its uncommitted entries are doomed.
	ctMustAppend(t, c, acks, nl, "majority", ctRecords("majority", 1, 1))
	c.net.Heal()
	c.converged()

	// Phase C: deadlines so short that calls end anywhere between before
	// the hand-off and the reply; all must report ErrNoLeader.
	bs = nil
	running := ctRunning(c)
	for i := 0; i < 30; i++ {
		bs = append(bs, newBatch('C', running[i%len(running)], i))
	}
	for i, b := range bs {
		run([]*batch{b}, time.Duration(i%6)*3*time.Millisecond)
	}
	// A ctx already ended, on the leader itself: ErrNoLeader too, whether
	// the call got to hand the append over or not.
	L = c.leader(0)
	for i := 0; i < 10; i++ {
		run([]*batch{newBatch('E', L, i)}, 0)
	}
	t.Logf("%d of %d failed appends of unknown outcome", unknown, len(batches))
	ctMustAppend(t, c, acks, L, "barrier-c", ctRecords("barrier-c", 1, 1))
	c.converged()

	// Which failed batches committed anyway? (More may commit later: a
	// lookup can only miss, never invent.)
	type where struct {
		found bool
		e     state.IDEntry
	}
	pre := make([]where, len(batches))
	preCommitted := 0
	for bi, b := range batches {
		var found []state.IDEntry
		for _, r := range b.recs {
			e, ok, err := c.node(L).shards[0].engine.Probe().LookupID(r.ID)
			require.NoError(t, err)
			if ok {
				found = append(found, e)
			}
		}
		if len(found) == 0 {
			continue
		}
		require.Len(t, found, len(b.recs), "batch %q committed in part", b.key)
		if b.acked {
			require.Equal(t, b.res.FirstOffset, found[0].Offset, "acknowledged batch %q moved", b.key)
		}
		require.NotEqual(t, byte('B'), b.phase, "batch %q handed to an isolated leader was committed", b.key)
		pre[bi] = where{true, found[0]}
		preCommitted++
	}
	t.Logf("%d of %d failed batches had committed", preCommitted, len(batches))
	require.Positive(t, preCommitted, "no abandoned append committed: the scenario did not work")

	// Retry every failed batch with the same IDs and expectation, through
	// the node it was first given to, until it is acknowledged.
	results := make([]AppendResult, len(batches))
	retry := func(bi int) error {
		b := batches[bi]
		var last error
		for attempt := 0; attempt < 10; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			res, err := c.node(b.via).Append(ctx, b.key, b.recs, ExpectKeySeq(0))
			cancel()
			if err == nil {
				results[bi] = res
				return nil
			}
			if !ctRetryable(err) {
				return fmt.Errorf("retry of %q: %w", b.key, err)
			}
			last = err
		}
		return fmt.Errorf("retry of %q kept failing: %w", b.key, last)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(batches))
	for bi := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[bi] = retry(bi)
		}()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	dups := 0
	for bi, b := range batches {
		res := results[bi]
		require.Equal(t, len(b.recs), res.Count, "%q", b.key)
		require.Equal(t, uint64(1), res.FirstKeySeq, "%q", b.key)
		if res.Duplicate {
			dups++
		}
		if pre[bi].found {
			require.True(t, res.Duplicate, "retry of committed batch %q must be a duplicate: %+v", b.key, res)
			require.Equal(t, pre[bi].e.Partition, res.Partition, "%q", b.key)
			require.Equal(t, pre[bi].e.Offset, res.FirstOffset, "%q: original offset", b.key)
			require.Equal(t, pre[bi].e.KeySeq, res.FirstKeySeq, "%q", b.key)
			require.Equal(t, pre[bi].e.Time, res.Time.UnixNano(), "%q: original time", b.key)
		}
		if b.phase == 'B' {
			require.False(t, res.Duplicate, "batch %q handed to an isolated leader was committed", b.key)
		}
		require.NoError(t, acks.add(b.key, b.recs, res, res.Position.Shard))
	}
	t.Logf("retries: %d duplicates, %d appended now", dups, len(batches)-dups)

	// Retrying once more: everything is committed now, so every retry is a
	// duplicate with the first acknowledgement's place.
	again := make([]AppendResult, len(batches))
	for bi, b := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			again[bi], errs[bi] = c.node(running[bi%len(running)]).Append(ctx, b.key, b.recs, ExpectKeySeq(0))
		}()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	for bi, b := range batches {
		res := again[bi]
		require.True(t, res.Duplicate, "%q", b.key)
		require.Equal(t, results[bi].Partition, res.Partition, "%q", b.key)
		require.Equal(t, results[bi].FirstOffset, res.FirstOffset, "%q", b.key)
		require.Equal(t, results[bi].FirstKeySeq, res.FirstKeySeq, "%q", b.key)
		require.True(t, results[bi].Time.Equal(res.Time), "%q", b.key)
	}

	c.converged()
	ctVerifyNodes(t, c, acks, 3)
}

// TestNonVoterJoins adds a non-voter through a follower while appends go
// on: it catches up, serves the same reads, gives read-your-writes with
// WaitApplied, and its loss does not slow the voters down.
func TestNonVoterJoins(t *testing.T) {
	c := newCluster(t, 3, nil)
	acks := newCtAcks()
	L := c.leader(0)
	via := (L + 1) % 3

	// The background writer holds the voters' handles: the harness's add
	// grows c.nodes while it runs.
	voters := []*Log{c.node(0), c.node(1), c.node(2)}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	var bgAppends atomic.Int64
	bg.Add(1)
	go func() {
		defer bg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			key := fmt.Sprintf("bg-%d", i%17)
			recs := ctRecords(key, 0, 1+i%2)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := voters[i%3].Append(ctx, key, recs)
			cancel()
			if err != nil {
				t.Errorf("background append %d: %v", i, err)
				return
			}
			if err := acks.add(key, recs, res, res.Position.Shard); err != nil {
				t.Error(err)
				return
			}
			bgAppends.Add(1)
		}
	}()
	var stopOnce sync.Once
	stopBG := func() {
		stopOnce.Do(func() { close(stop) })
		bg.Wait()
	}
	defer stopBG()
	wait.Until(t, 20*time.Second, "background appends", func() bool { return bgAppends.Load() >= 50 || t.Failed() })

	nv := c.add(via, true)
	nvID := c.nodes[nv].id
	wait.Until(t, 20*time.Second, "the leader to list "+nvID+" as a non-voter", func() bool {
		for _, s := range c.node(L).Status().Shards[0].Servers {
			if s.ID == nvID {
				return !s.Voter && s.Addr == c.nodes[nv].addr
			}
		}
		return false
	})
	commit := c.node(L).shards[0].Raft.CommitIndex()
	wait.Until(t, 30*time.Second, nvID+" to apply the leader's commit index", func() bool {
		return appliedIndex(t, c.node(nv), 0) >= commit
	})
	atJoin := bgAppends.Load()
	wait.Until(t, 20*time.Second, "more background appends", func() bool { return bgAppends.Load() >= atJoin+50 || t.Failed() })
	stopBG()
	require.False(t, t.Failed())
	t.Logf("%d background appends", bgAppends.Load())

	L = c.leader(0) // all four agree on it
	st := c.node(L).Status()
	require.Len(t, st.Shards[0].Servers, 4)
	nVoters := 0
	for _, s := range st.Shards[0].Servers {
		if s.Voter {
			nVoters++
		}
	}
	require.Equal(t, 3, nVoters)
	nvs := c.node(nv).Status().Shards[0]
	require.Equal(t, raft.Follower.String(), nvs.State)
	require.Equal(t, c.nodes[L].id, nvs.LeaderID)

	// Same reads on the non-voter as on the leader.
	c.converged()
	for p := Partition(0); int(p) < c.node(L).Partitions(); p++ {
		ctRequireSameRecords(t, fmt.Sprintf("partition %d on %s vs leader", p, nvID), readAll(t, c.node(L), p), readAll(t, c.node(nv), p))
	}
	ctVerifyNodes(t, c, acks, 4)

	// Read-your-writes on the non-voter.
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("ryw-%d", i%4)
		recs := ctRecords(key, 0, 1)
		res := ctMustAppend(t, c, acks, L, key, recs)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		require.NoError(t, c.node(nv).WaitApplied(ctx, res.Position))
		cancel()
		got, err := c.node(nv).ReadKey(context.Background(), res.Partition, key, res.FirstKeySeq, ReadOptions{MaxRecords: 1})
		require.NoError(t, err)
		require.Len(t, got, 1, "%s must see %q/%d after WaitApplied", nvID, key, res.FirstKeySeq)
		require.Equal(t, recs[0].ID, got[0].ID)
		require.Equal(t, res.FirstOffset, got[0].Offset)
	}

	// Without the non-voter, the voters go on at full speed.
	c.stop(nv)
	start := time.Now()
	for i := 0; i < 100; i++ {
		key := fmt.Sprintf("after-%d", i%5)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		recs := ctRecords(key, 0, 1)
		res, err := c.node(L).Append(ctx, key, recs)
		cancel()
		require.NoError(t, err, "append %d after the non-voter stopped", i)
		require.NoError(t, acks.add(key, recs, res, res.Position.Shard))
	}
	t.Logf("100 appends without the non-voter in %v", time.Since(start))
	c.converged()
	ctVerifyNodes(t, c, acks, 3)
}

// Deletion, truncation and the key conditions work from a follower: the
// operations are forwarded to the leader, their errors come back typed,
// and every replica hides the same records.
func TestKeyOperationsFromFollower(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := context.Background()
	lead := c.leader(0)
	f := c.node((lead + 1) % 3)
	p := f.Partition("s")
	res, err := f.Append(ctx, "s", []NewRecord{rec("1"), rec("2"), rec("3")}, ExpectKeyAbsent())
	require.NoError(t, err)
	_, err = f.Append(ctx, "s", []NewRecord{rec("4")}, ExpectKeyAbsent())
	var kse *KeySeqError
	require.ErrorAs(t, err, &kse)
	require.Equal(t, KeySeqError{Partition: p, Key: "s", Condition: CondAbsent, Actual: 3}, *kse)

	tr, err := f.TruncateKey(ctx, "s", 3, ExpectKeySeq(3))
	require.NoError(t, err)
	require.Equal(t, uint64(3), tr.FirstKeySeq)
	del, err := f.DeleteKey(ctx, "s", ExpectKeyExists())
	require.NoError(t, err)
	_, err = f.Append(ctx, "s", []NewRecord{rec("4")})
	require.ErrorIs(t, err, ErrKeyDeleted)

	for i := 0; i < 3; i++ {
		n := c.node(i)
		require.NoError(t, n.WaitApplied(ctx, del.Position))
		info, err := n.KeyInfo(ctx, p, "s")
		require.NoError(t, err)
		require.Equal(t, KeyInfo{Seq: 3, First: 4, Deleted: true}, info, "node %d", i)
		recs, err := n.ReadKey(ctx, p, "s", 1, ReadOptions{})
		require.NoError(t, err)
		require.Empty(t, recs)
		recs, err = n.Read(ctx, p, res.FirstOffset, ReadOptions{})
		require.NoError(t, err)
		require.Empty(t, recs)
	}
	again, err := f.Append(ctx, "s", []NewRecord{rec("4")}, Recreate(), ExpectKeyAbsent())
	require.NoError(t, err)
	require.Equal(t, uint64(4), again.FirstKeySeq)
	recs, err := c.node(lead).ReadKey(ctx, p, "s", 0, ReadOptions{})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, "4", string(recs[0].Value))
}

// After ReadBarrier, a follower's reads include every append acknowledged
// before it, whichever node took it.
func TestReadBarrierOnFollower(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := context.Background()
	lead := c.leader(0)
	f := c.node((lead + 1) % 3)
	for i := 0; i < 50; i++ {
		res, err := c.node(lead).Append(ctx, fmt.Sprint("k", i), []NewRecord{rec("x")})
		require.NoError(t, err)
		require.NoError(t, f.ReadBarrier(ctx, 0))
		seq, err := f.KeySeq(ctx, res.Partition, fmt.Sprint("k", i))
		require.NoError(t, err)
		require.Equal(t, uint64(1), seq, "append %d visible on the follower", i)
		require.NoError(t, c.node(lead).ReadBarrier(ctx, 0))
	}
	require.ErrorIs(t, f.ReadBarrier(ctx, 5), ErrUnknownPartition)
}

// TestFollowerCrashDuringSnapshotInstall: raft saves a snapshot received
// from the leader before the FSM restores it, and a restart does not
// restore (NoSnapshotRestoreOnStart). A follower stopped after the save
// and before a successful Restore must come back with the snapshot's
// state, not apply the entries after it on top of its old state.
func TestFollowerCrashDuringSnapshotInstall(t *testing.T) {
	c, acks, li, f, _ := ctFollowerBehindCompaction(t, func(c *testCluster, acks *ctAcks, li int) {
		for i := 0; i < 150; i++ {
			key := fmt.Sprintf("k%d", i%7)
			ctMustAppend(t, c, acks, li, key, ctRecords(key, 0, 3))
		}
	})

	// The follower comes back, receives the snapshot, and "crashes" in
	// Restore: raft has saved the snapshot, the state file is the old one.
	var failing atomic.Bool
	var attempts atomic.Int64
	failing.Store(true)
	c.nodes[f].cfg.failRestore = func() bool {
		attempts.Add(1)
		return failing.Load()
	}
	c.open(f, nil)
	wait.Until(t, 30*time.Second, "the follower to be sent a snapshot", func() bool { return attempts.Load() > 0 })
	c.stop(f)
	failing.Store(false)
	// A new leader does not know the follower still needs the snapshot:
	// it probes, the follower answers with the saved snapshot's index as
	// its last, and the leader sends the entries after it.
	require.NoError(t, c.node(li).shards[0].Raft.LeadershipTransfer().Error())
	li = c.leader(0, ctRunning(c)...)
	c.open(f, nil)
	c.converged()

	ctVerifyNodes(t, c, acks, 3)
	want := ctBucketDigests(t, c.node(li), 0)
	for _, i := range ctRunning(c) {
		require.Equal(t, want, ctBucketDigests(t, c.node(i), 0), "state of %s vs leader %s", c.nodes[i].id, c.nodes[li].id)
	}
}

// A leader checks an append a peer forwards as the node that took it
// checked it: bytes that do not decode, a record over the limit or a
// record without an ID are refused before anything is proposed, so no
// replica can ever be handed an entry it cannot apply.
func TestForwardedAppendIsValidated(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.MaxRecordBytes = 1 << 10 })
	ctx := context.Background()
	li := c.leader(0)
	f := c.node((li + 1) % 3)
	leader := c.node(li)
	_, err := leader.Append(ctx, "k", []NewRecord{rec("before")})
	require.NoError(t, err)
	c.converged()
	lastBefore := leader.shards[0].Raft.LastIndex()

	big := wire.Request{Partition: leader.Partition("k"), Key: "k", Records: []NewRecord{{ID: uuid.New(), Value: make([]byte, 2<<10)}}}
	noID := wire.Request{Partition: leader.Partition("k"), Key: "k", Records: []NewRecord{{Value: []byte("x")}}}
	badPart := wire.Request{Partition: 999, Key: "k", Records: []NewRecord{{ID: uuid.New(), Value: []byte("x")}}}
	for name, payload := range map[string][]byte{
		"garbage":           {0xde, 0xad, 0xbe, 0xef},
		"record too large":  wire.EncodeRequest(nil, &big),
		"record without ID": wire.EncodeRequest(nil, &noID),
		"unknown partition": wire.EncodeRequest(nil, &badPart),
	} {
		resp, err := f.client.Call(ctx, leader.Addr(), route.MethodAppend, payload)
		require.NoError(t, err, name)
		require.NotEmpty(t, resp, name)
		require.NotEqual(t, byte(0), resp[0], "%s: the leader must refuse it", name)
	}
	require.Equal(t, lastBefore, leader.shards[0].Raft.LastIndex(), "nothing was proposed")
	// The cluster is whole: every node applies the next append.
	res, err := f.Append(ctx, "k", []NewRecord{rec("after")})
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		require.NoError(t, c.node(i).WaitApplied(ctx, res.Position))
	}
}

// A new leader may hold entries a previous leader acknowledged without
// having applied them yet (or knowing they are committed): a read barrier
// answered from its applied index alone would let a read miss them. The
// barrier waits until the new leader has committed an entry of its own
// term and applied everything before it.
func TestReadBarrierAfterLeaderChange(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := context.Background()
	l1 := c.leader(0)
	l2 := (l1 + 1) % 3
	_, err := c.node(l1).Append(ctx, "k", []NewRecord{rec("first")})
	require.NoError(t, err)
	c.converged()

	// l2 stores and acknowledges entries but applies none of them.
	release := make(chan struct{})
	var releaseOnce sync.Once
	resume := func() { releaseOnce.Do(func() { close(release) }) }
	defer resume() // before the cluster closes, even if the test fails
	c.node(l2).shards[0].engine.Probe().HoldApplies(release)
	res, err := c.node(l1).Append(ctx, "k", []NewRecord{rec("acknowledged")})
	require.NoError(t, err)
	require.Equal(t, uint64(2), res.FirstKeySeq)
	require.NoError(t, c.node(l1).TransferLeadership(0, c.nodes[l2].id))
	wait.Until(t, 10*time.Second, c.nodes[l2].id+" to lead", func() bool {
		return c.node(l2).shards[0].Raft.State() == raft.Leader
	})

	p := c.node(l2).Partition("k")
	done := make(chan error, 1)
	go func() { done <- c.node(l2).ReadBarrier(ctx, 0) }()
	select {
	case err := <-done:
		// Returned while l2 has not applied the acknowledged write: a read
		// here must still see it.
		require.NoError(t, err)
		seq, err := c.node(l2).KeySeq(ctx, p, "k")
		require.NoError(t, err)
		require.Equal(t, uint64(2), seq, "the barrier returned before the acknowledged write was applied")
	case <-time.After(500 * time.Millisecond):
		// Still waiting for l2 to apply: as it must.
	}
	resume()
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-bctx.Done():
		t.Fatal("the read barrier did not return once applies resumed")
	}
	seq, err := c.node(l2).KeySeq(ctx, p, "k")
	require.NoError(t, err)
	require.Equal(t, uint64(2), seq)
}
