package raftlog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/systemtest/wait"
)

// partitionDigest is a SHA-256 of every field of partition p's records
// below offset end, as l serves them, and how many there were.
func partitionDigest(t testing.TB, l *Log, p Partition, end uint64) (string, int) {
	t.Helper()
	h := sha256.New()
	n := 0
	for from := uint64(0); from < end; {
		recs, err := l.Read(context.Background(), p, from, ReadOptions{MaxRecords: 1000})
		require.NoError(t, err)
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if r.Offset >= end {
				return fmt.Sprintf("%x", h.Sum(nil)), n
			}
			b := binary.BigEndian.AppendUint64(nil, r.Offset)
			b = binary.BigEndian.AppendUint64(b, r.KeySeq)
			b = binary.BigEndian.AppendUint64(b, uint64(r.Time.UnixNano()))
			b = append(b, r.ID[:]...)
			b = fmt.Appendf(b, "%q%q", r.Key, r.Value)
			for _, hd := range r.Headers {
				b = fmt.Appendf(b, "%q=%q", hd.Key, hd.Value)
			}
			h.Write(b)
			n++
		}
		from = recs[len(recs)-1].Offset + 1
	}
	return fmt.Sprintf("%x", h.Sum(nil)), n
}

// A backup taken of a follower while appends go on restores into a new
// 3-node cluster (2 shards) whose partitions hold exactly the records up
// to the backup's heads, byte for byte, under a new cluster ID; the new
// cluster takes appends, and neither cluster's nodes start among the
// other's.
func TestBackupUnderLoadRestoresToNewCluster(t *testing.T) {
	mod := func(c *Config) { c.Partitions, c.Shards = 4, 2 }
	old := newCluster(t, 3, mod)
	ctx := context.Background()

	var appended atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-k%d", w, i%7)
				_, err := old.node(w%3).Append(ctx, key, []NewRecord{rec(fmt.Sprintf("%d/%d", w, i)), {Value: []byte("b"), Headers: []Header{{Key: "h", Value: []byte("v")}}}})
				if err != nil {
					t.Errorf("append: %v", err)
					return
				}
				appended.Add(2)
			}
		}()
	}
	wait.Until(t, 20*time.Second, "400 records appended", func() bool { return appended.Load() >= 400 })

	file := filepath.Join(t.TempDir(), "backup.esb")
	fh, err := os.Create(file)
	require.NoError(t, err)
	var calls []int64
	info, err := old.node(1).Backup(ctx, fh, BackupOptions{Progress: func(done, total int64) { calls = append(calls, done, total) }})
	require.NoError(t, err)
	require.NoError(t, fh.Close())
	atBackup := appended.Load()
	wait.Until(t, 20*time.Second, "more appends after the backup", func() bool { return appended.Load() >= atBackup+200 })
	close(stop)
	wg.Wait()
	old.converged()

	require.Equal(t, old.node(1).ClusterID(), info.ClusterID)
	require.Equal(t, "n2", info.NodeID)
	require.NotEmpty(t, calls)
	require.Equal(t, info.Bytes(), calls[len(calls)-1], "progress ends at the total")
	var inBackup, inOld uint64
	for p := range info.Heads {
		inBackup += info.Heads[p]
		head, err := old.node(0).NextOffset(Partition(p))
		require.NoError(t, err)
		inOld += head
	}
	require.Greater(t, inBackup, uint64(0))
	require.Greater(t, inOld, inBackup, "appends went on during and after the backup")

	// Restore the same backup into three new nodes at new addresses.
	restored, lns := newStoppedCluster(t, 3, mod, nil)
	clusterID := ""
	for _, nd := range restored.nodes {
		rf, err := os.Open(file)
		require.NoError(t, err)
		res, err := Restore(ctx, rf, RestoreConfig{Dir: nd.dir, NodeID: nd.id, Peers: nd.cfg.Peers, ClusterID: clusterID})
		rf.Close()
		require.NoError(t, err)
		require.Equal(t, info.Heads, res.Backup.Heads)
		clusterID = res.ClusterID
	}
	require.NotEqual(t, info.ClusterID, clusterID)
	restored.openTogether(lns, nil)
	for i := range restored.nodes {
		require.Equal(t, clusterID, restored.node(i).ClusterID())
	}
	for p, head := range info.Heads {
		want, n := partitionDigest(t, old.node(0), Partition(p), head)
		require.Equal(t, int(head), n, "partition %d: the old cluster holds every offset below the backup's head", p)
		for i := range restored.nodes {
			got, _ := partitionDigest(t, restored.node(i), Partition(p), ^uint64(0))
			require.Equal(t, want, got, "partition %d on restored node %d", p, i)
			next, err := restored.node(i).NextOffset(Partition(p))
			require.NoError(t, err)
			require.Equal(t, head, next)
		}
	}
	// The new cluster goes on from there, on every shard.
	for k := 0; k < 8; k++ {
		key := fmt.Sprintf("after-%d", k)
		res, err := restored.node(k%3).Append(ctx, key, []NewRecord{rec("new")})
		require.NoError(t, err)
		require.Equal(t, info.Heads[res.Partition]+uint64(k/4), res.FirstOffset)
	}

	// A restored node never starts among the old cluster's nodes, nor an
	// old node among the restored ones.
	restored.stop(0)
	nd := restored.nodes[0]
	nd.cfg.Peers = append([]Peer{nd.cfg.Peers[0]}, Peer{ID: "n2", Addr: old.nodes[1].addr}, Peer{ID: "n3", Addr: old.nodes[2].addr})
	err = restored.openErr(0, listenOn(t, nd.addr))
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorContains(t, err, info.ClusterID)
	old.stop(2)
	od := old.nodes[2]
	od.cfg.Peers = []Peer{{ID: "n1", Addr: restored.nodes[1].addr}, {ID: "n2", Addr: restored.nodes[2].addr}, od.cfg.Peers[2]}
	err = old.openErr(2, listenOn(t, od.addr))
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorContains(t, err, clusterID)
}

// listenOn listens at addr again, retrying while the kernel releases it.
func listenOn(t testing.TB, addr string) net.Listener {
	var ln net.Listener
	wait.Until(t, 10*time.Second, "listen on "+addr, func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	return ln
}

// A single embedded node restores from a backup of itself into a new
// directory; bad input is refused with ErrConfig or ErrCorrupt and
// nothing is written.
func TestBackupRestoreSingleNode(t *testing.T) {
	ctx := context.Background()
	l, err := Open(ctx, Config{Dir: t.TempDir(), Partitions: 2})
	require.NoError(t, err)
	defer l.Close()
	for i := 0; i < 50; i++ {
		_, err := l.Append(ctx, fmt.Sprintf("k%d", i%5), []NewRecord{rec(fmt.Sprint(i))})
		require.NoError(t, err)
	}
	var buf bytes.Buffer
	info, err := l.Backup(ctx, &buf, BackupOptions{})
	require.NoError(t, err)
	require.Equal(t, uint64(50), info.Heads[0]+info.Heads[1])

	dir := filepath.Join(t.TempDir(), "restored")
	res, err := Restore(ctx, bytes.NewReader(buf.Bytes()), RestoreConfig{Dir: dir})
	require.NoError(t, err)
	r, err := Open(ctx, Config{Dir: dir, Partitions: 2})
	require.NoError(t, err)
	defer r.Close()
	require.Equal(t, res.ClusterID, r.ClusterID())
	require.NotEqual(t, l.ClusterID(), r.ClusterID())
	for p := Partition(0); p < 2; p++ {
		want, _ := partitionDigest(t, l, p, info.Heads[p])
		got, n := partitionDigest(t, r, p, ^uint64(0))
		require.Equal(t, want, got)
		require.Equal(t, int(info.Heads[p]), n)
	}
	_, err = r.Append(ctx, "k1", []NewRecord{rec("after")}, ExpectKeySeq(10))
	require.NoError(t, err, "key sequences go on from the backup's")

	b := buf.Bytes()
	for name, c := range map[string]struct {
		in  []byte
		cfg RestoreConfig
		err error
	}{
		"not empty":       {b, RestoreConfig{Dir: dir}, ErrConfig},
		"not a backup":    {[]byte("hello, world"), RestoreConfig{}, ErrCorrupt},
		"cut short":       {b[:len(b)-10], RestoreConfig{}, ErrCorrupt},
		"flipped byte":    {flip(b, len(b)/2), RestoreConfig{}, ErrCorrupt},
		"flipped info":    {flip(b, 20), RestoreConfig{}, ErrCorrupt},
		"same cluster ID": {b, RestoreConfig{ClusterID: info.ClusterID}, ErrConfig},
		"not a peer":      {b, RestoreConfig{NodeID: "n9", Peers: []Peer{{ID: "n1", Addr: "127.0.0.1:1"}}}, ErrConfig},
	} {
		if c.cfg.Dir == "" {
			c.cfg.Dir = filepath.Join(t.TempDir(), "x")
		}
		_, err := Restore(ctx, bytes.NewReader(c.in), c.cfg)
		require.ErrorIs(t, err, c.err, name)
		_, statErr := os.Stat(c.cfg.Dir)
		if name != "not empty" {
			require.True(t, os.IsNotExist(statErr), "%s: no node directory is left", name)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0xff
	return c
}

// A backup that excludes a key prefix holds none of those records' bytes;
// restored, they read as erased, every other record is whole, and the
// restored segments pass the CRC checks of a full copy.
func TestBackupExcludesKeys(t *testing.T) {
	ctx := context.Background()
	l, err := Open(ctx, Config{Dir: t.TempDir(), Partitions: 2})
	require.NoError(t, err)
	defer l.Close()
	const marker = "MARKER-7c1e9b"
	for i := 0; i < 30; i++ {
		_, err := l.Append(ctx, fmt.Sprintf("k%d", i%3), []NewRecord{rec(fmt.Sprint(i))})
		require.NoError(t, err)
		_, err = l.Append(ctx, fmt.Sprintf("$x-%d", i%2), []NewRecord{rec(fmt.Sprintf("%s/%d", marker, i))})
		require.NoError(t, err)
	}
	var buf bytes.Buffer
	info, err := l.Backup(ctx, &buf, BackupOptions{ExcludeKeyPrefixes: []string{"$x-"}})
	require.NoError(t, err)
	require.Equal(t, []string{"$x-"}, info.ExcludedKeyPrefixes)
	require.NotContains(t, buf.String(), marker)

	dir := filepath.Join(t.TempDir(), "restored")
	_, err = Restore(ctx, bytes.NewReader(buf.Bytes()), RestoreConfig{Dir: dir})
	require.NoError(t, err)
	r, err := Open(ctx, Config{Dir: dir, Partitions: 2})
	require.NoError(t, err)
	defer r.Close()
	for i := 0; i < 3; i++ {
		key := fmt.Sprintf("k%d", i)
		want, err := l.ReadKey(ctx, l.Partition(key), key, 1, ReadOptions{})
		require.NoError(t, err)
		got, err := r.ReadKey(ctx, r.Partition(key), key, 1, ReadOptions{})
		require.NoError(t, err)
		require.Equal(t, want, got)
		require.Len(t, got, 10)
	}
	for i := 0; i < 2; i++ {
		key := fmt.Sprintf("$x-%d", i)
		got, err := r.ReadKey(ctx, r.Partition(key), key, 1, ReadOptions{})
		require.NoError(t, err)
		require.Empty(t, got, "excluded records read as erased")
		seq, err := r.KeySeq(ctx, r.Partition(key), key)
		require.NoError(t, err)
		require.Equal(t, uint64(15), seq, "the key's sequence stays")
	}
	// Another backup of the restored node checks every segment against
	// the CRC its index records.
	var again bytes.Buffer
	_, err = r.Backup(ctx, &again, BackupOptions{})
	require.NoError(t, err)
	require.NotContains(t, again.String(), marker)
	for _, s := range r.shards {
		require.NoError(t, s.engine.Damage())
	}
}

// smallBackup is a backup of a single node holding a few records.
func smallBackup(t testing.TB) []byte {
	ctx := context.Background()
	l, err := Open(ctx, Config{Dir: t.TempDir(), Partitions: 2})
	require.NoError(t, err)
	defer l.Close()
	for i := 0; i < 5; i++ {
		_, err := l.Append(ctx, fmt.Sprintf("k%d", i%2), []NewRecord{rec(fmt.Sprint(i))})
		require.NoError(t, err)
	}
	var buf bytes.Buffer
	_, err = l.Backup(ctx, &buf, BackupOptions{})
	require.NoError(t, err)
	return buf.Bytes()
}

// FuzzRestore: whatever the bytes, Restore answers (an error for all but
// a whole backup), never panics, and leaves no directory when it fails.
func FuzzRestore(f *testing.F) {
	b := smallBackup(f)
	f.Add(b)
	f.Add(b[:100])
	f.Add([]byte("ESRLBKP1\x00\x00\x00\x02{}"))
	f.Fuzz(func(t *testing.T, in []byte) {
		dir := filepath.Join(t.TempDir(), "n")
		_, err := Restore(context.Background(), bytes.NewReader(in), RestoreConfig{Dir: dir})
		if err != nil {
			_, statErr := os.Stat(dir)
			require.True(t, os.IsNotExist(statErr), "a failed restore leaves no directory: %v", err)
		}
	})
}

// A shard that never applied anything restores too, and takes appends.
func TestBackupRestoreEmptyShard(t *testing.T) {
	ctx := context.Background()
	l, err := Open(ctx, Config{Dir: t.TempDir(), Partitions: 2, Shards: 2})
	require.NoError(t, err)
	defer l.Close()
	keyIn := func(p Partition) string {
		for i := 0; ; i++ {
			if k := fmt.Sprintf("k%d", i); l.Partition(k) == p {
				return k
			}
		}
	}
	_, err = l.Append(ctx, keyIn(0), []NewRecord{rec("a")})
	require.NoError(t, err)
	var buf bytes.Buffer
	info, err := l.Backup(ctx, &buf, BackupOptions{})
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 0}, info.Heads)

	dir := filepath.Join(t.TempDir(), "restored")
	_, err = Restore(ctx, bytes.NewReader(buf.Bytes()), RestoreConfig{Dir: dir})
	require.NoError(t, err)
	r, err := Open(ctx, Config{Dir: dir, Partitions: 2, Shards: 2})
	require.NoError(t, err)
	defer r.Close()
	for p := Partition(0); p < 2; p++ {
		res, err := r.Append(ctx, keyIn(p), []NewRecord{rec("b")})
		require.NoError(t, err)
		require.Equal(t, info.Heads[p], res.FirstOffset, "partition %d", p)
	}
}
