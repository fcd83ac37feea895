package raftlog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/raftlog/internal/state"
)

// Backups (DESIGN.md, "Backup and restore").
//
// A backup is one stream (a file): the magic "ESRLBKP1", a manifest
// (4-byte big-endian length, the JSON of BackupInfo, 4-byte CRC-32C of
// the JSON), then each shard's full copy in shard order, each as an
// 8-byte big-endian length and the copy itself: the full copy a leader
// sends a follower (internal/state/snapshot.go), CRC-checked file by file.
const (
	backupMagic    = "ESRLBKP1"
	backupFormat   = 1
	maxBackupInfo  = 1 << 20
	restoredTerm   = 1
	backupCopyHdr  = 8
	backupInfoTail = 4
)

var backupCRC = crc32.MakeTable(crc32.Castagnoli)

// BackupInfo is a backup's manifest: what it holds and where each
// partition ends in it.
type BackupInfo struct {
	Format int `json:"format"`
	// ClusterID and NodeID name the cluster and the node the backup was
	// taken of (a restore gives the new cluster another ID).
	ClusterID  string    `json:"cluster_id"`
	NodeID     string    `json:"node_id"`
	Partitions int       `json:"partitions"`
	Shards     int       `json:"shards"`
	CreatedAt  time.Time `json:"created_at"`
	// Applied holds, per shard, the raft index the shard's copy covers.
	Applied []uint64 `json:"applied"`
	// Heads holds, per partition, its next offset in the backup: the
	// backup holds offsets below it.
	Heads []uint64 `json:"heads"`
	// ShardBytes holds the length of each shard's copy.
	ShardBytes []int64 `json:"shard_bytes"`
	// ExcludedKeyPrefixes are the key prefixes whose records the backup
	// holds as tombstones (BackupOptions).
	ExcludedKeyPrefixes []string `json:"excluded_key_prefixes,omitempty"`
}

// BackupOptions adjust a backup.
type BackupOptions struct {
	// Progress, if not nil, is told of the bytes written.
	Progress Progress
	// ExcludeKeyPrefixes leaves out the records of keys with these
	// prefixes: the backup holds a tombstone of the same length in place
	// of each (the record is erased in a restored node; its offset, key
	// sequence and ID stay). Package eventstore leaves out its key store
	// this way, so that a backup never holds encryption keys.
	ExcludeKeyPrefixes []string
}

// Bytes is the length of the shards' copies together.
func (b BackupInfo) Bytes() int64 {
	var n int64
	for _, s := range b.ShardBytes {
		n += s
	}
	return n
}

// Progress reports bytes copied so far out of a total.
type Progress func(done, total int64)

// Backup writes a consistent copy of this node's state to w: per shard,
// the state as of a flush made for it (every record this node had
// applied when Backup was called), the index and the segments, verified
// against their checksums as they are read. Each shard is consistent in
// itself (one raft index); shards are copied at about the same time, not
// at one instant. Appends and reads go on meanwhile. The backup holds every
// record of the log (but those opt excludes) as stored (SECURITY.md): keep
// it as you keep the data directories.
func (l *Log) Backup(ctx context.Context, w io.Writer, opt BackupOptions) (BackupInfo, error) {
	if l.isClosed() {
		return BackupInfo{}, ErrClosed
	}
	info := BackupInfo{
		Format: backupFormat, ClusterID: l.ClusterID(), NodeID: l.cfg.NodeID,
		Partitions: l.cfg.Partitions, Shards: l.cfg.Shards, CreatedAt: time.Now().UTC(),
		Applied: make([]uint64, l.cfg.Shards), Heads: make([]uint64, l.cfg.Partitions), ShardBytes: make([]int64, l.cfg.Shards),
		ExcludedKeyPrefixes: opt.ExcludeKeyPrefixes,
	}
	var exclude func([]byte) bool
	if len(opt.ExcludeKeyPrefixes) > 0 {
		exclude = func(key []byte) bool {
			for _, p := range opt.ExcludeKeyPrefixes {
				if bytes.HasPrefix(key, []byte(p)) {
					return true
				}
			}
			return false
		}
	}
	copies := make([]*state.BackupCopy, 0, len(l.shards))
	defer func() {
		for _, c := range copies {
			c.Close()
		}
	}()
	for _, s := range l.shards {
		// A raft snapshot flushes the tables, so the copy covers what
		// this node applied until now, not only its last flush.
		// Raft may never answer (a shard whose applies stopped on
		// damage): ctx bounds the wait.
		snap := make(chan error, 1)
		go func() { snap <- s.Raft.Snapshot().Error() }()
		select {
		case err := <-snap:
			if err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
				l.logger.Warn("raftlog: backup: could not flush before the copy; it covers the last flush", "shard", s.ID, "err", err)
			}
		case <-ctx.Done():
			return BackupInfo{}, fmt.Errorf("raftlog: backup: flush of shard %d: %w", s.ID, ctx.Err())
		}
		c, err := s.engine.OpenBackup(exclude)
		if err != nil {
			return BackupInfo{}, err
		}
		copies = append(copies, c)
		info.Applied[s.ID], info.ShardBytes[s.ID] = c.Applied, c.Size
		for p, next := range c.Heads {
			info.Heads[p] = next
		}
	}
	js, err := json.Marshal(info)
	if err != nil {
		return BackupInfo{}, err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	hdr := append([]byte(backupMagic), binary.BigEndian.AppendUint32(nil, uint32(len(js)))...)
	hdr = append(append(hdr, js...), binary.BigEndian.AppendUint32(nil, crc32.Checksum(js, backupCRC))...)
	if _, err := bw.Write(hdr); err != nil {
		return BackupInfo{}, fmt.Errorf("raftlog: backup: %w", err)
	}
	pw := &progressWriter{w: bw, progressCount: progressCount{ctx: ctx, fn: opt.Progress, total: info.Bytes()}}
	for i, c := range copies {
		if _, err := bw.Write(binary.BigEndian.AppendUint64(nil, uint64(c.Size))); err != nil {
			return BackupInfo{}, fmt.Errorf("raftlog: backup: %w", err)
		}
		n, err := io.Copy(pw, c)
		if err == nil && n != c.Size {
			err = fmt.Errorf("shard %d's copy is %d bytes, %d announced", i, n, c.Size)
		}
		if err != nil {
			return BackupInfo{}, fmt.Errorf("raftlog: backup of shard %d: %w", i, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return BackupInfo{}, fmt.Errorf("raftlog: backup: %w", err)
	}
	return info, nil
}

// progressCount counts bytes for a Progress, telling it every 4 MiB and
// at the end, and stops the copy when ctx ends.
type progressCount struct {
	ctx              context.Context
	fn               Progress
	done, total, now int64
}

func (p *progressCount) check() error { return p.ctx.Err() }

func (p *progressCount) add(n int) {
	p.done += int64(n)
	if p.fn != nil && n > 0 && (p.done-p.now >= 4<<20 || p.done >= p.total) {
		p.now = p.done
		p.fn(p.done, p.total)
	}
}

type progressWriter struct {
	w io.Writer
	progressCount
}

func (p *progressWriter) Write(b []byte) (int, error) {
	if err := p.check(); err != nil {
		return 0, err
	}
	n, err := p.w.Write(b)
	p.add(n)
	return n, err
}

type progressReader struct {
	r io.Reader
	progressCount
}

func (p *progressReader) Read(b []byte) (int, error) {
	if err := p.check(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	p.add(n)
	return n, err
}

// ReadBackupInfo reads a backup's manifest from the start of r.
func ReadBackupInfo(r io.Reader) (BackupInfo, error) {
	var hdr [len(backupMagic) + 4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return BackupInfo{}, fmt.Errorf("%w: not an esraft backup: %v", ErrCorrupt, err)
	}
	if string(hdr[:len(backupMagic)]) != backupMagic {
		return BackupInfo{}, fmt.Errorf("%w: not an esraft backup (magic %q)", ErrCorrupt, hdr[:len(backupMagic)])
	}
	n := binary.BigEndian.Uint32(hdr[len(backupMagic):])
	if n > maxBackupInfo {
		return BackupInfo{}, fmt.Errorf("%w: backup manifest of %d bytes", ErrCorrupt, n)
	}
	b := make([]byte, n+backupInfoTail)
	if _, err := io.ReadFull(r, b); err != nil {
		return BackupInfo{}, fmt.Errorf("%w: backup manifest: %v", ErrCorrupt, err)
	}
	js := b[:n]
	if got, want := crc32.Checksum(js, backupCRC), binary.BigEndian.Uint32(b[n:]); got != want {
		return BackupInfo{}, fmt.Errorf("%w: backup manifest CRC-32C is %08x, it records %08x", ErrCorrupt, got, want)
	}
	var info BackupInfo
	if err := json.Unmarshal(js, &info); err != nil {
		return BackupInfo{}, fmt.Errorf("%w: backup manifest: %v", ErrCorrupt, err)
	}
	if info.Format != backupFormat {
		return BackupInfo{}, fmt.Errorf("%w: backup format %d (this version reads %d)", ErrCorrupt, info.Format, backupFormat)
	}
	if info.Partitions <= 0 || info.Shards <= 0 || info.Shards > info.Partitions ||
		len(info.Applied) != info.Shards || len(info.ShardBytes) != info.Shards || len(info.Heads) != info.Partitions {
		return BackupInfo{}, fmt.Errorf("%w: backup manifest of %d partitions and %d shards lists %d applied indexes, %d copies and %d heads",
			ErrCorrupt, info.Partitions, info.Shards, len(info.Applied), len(info.ShardBytes), len(info.Heads))
	}
	for _, n := range info.ShardBytes {
		if n < 0 {
			return BackupInfo{}, fmt.Errorf("%w: a shard copy of %d bytes", ErrCorrupt, n)
		}
	}
	return info, nil
}

// RestoreConfig says what a restored node is.
type RestoreConfig struct {
	// Dir is the new node's data directory: it must not exist, or be
	// empty.
	Dir string
	// NodeID is the node's ID (default "node1", as Config).
	NodeID string
	// Peers are the voters of the new cluster, this node included, as
	// the nodes will be started with (Config.Peers); every node of it is
	// restored from the same backup with the same Peers and ClusterID.
	// Empty: a single node, started without Peers; Addr is then its
	// address (empty: the embedded node without network).
	Peers []Peer
	Addr  string
	// ClusterID is the new cluster's identity, a UUID (empty: a new
	// one, returned). Never the backup's: a restored node must not take
	// part in the cluster the backup was taken of.
	ClusterID string
	// Progress, if not nil, is told of the bytes restored.
	Progress Progress
}

// RestoreResult is what Restore did.
type RestoreResult struct {
	Backup    BackupInfo
	ClusterID string // the new cluster's
}

// Restore writes a new node's data directory from a backup read from r:
// the shards' state as in the backup, under a new cluster identity, with
// raft's state saying that the new cluster's voters (cfg.Peers) hold
// everything up to the backup's index. Start the node with Open and the
// same ID, partitions, shards and Peers; it starts at once, with no
// bootstrap and no copy from a peer. Every CRC is checked as the copy is
// written; a backup that fails a check, or ends early, is ErrCorrupt and
// leaves no directory behind.
func Restore(ctx context.Context, r io.Reader, cfg RestoreConfig) (RestoreResult, error) {
	if cfg.NodeID == "" {
		cfg.NodeID = "node1"
	}
	var servers []raft.Server
	if len(cfg.Peers) == 0 {
		addr := cfg.Addr
		if addr == "" {
			addr = "local:" + cfg.NodeID
		}
		servers = []raft.Server{{ID: raft.ServerID(cfg.NodeID), Address: raft.ServerAddress(addr), Suffrage: raft.Voter}}
	} else {
		servers = peerServers(cfg.Peers)
	}
	if !hasServer(servers, cfg.NodeID) {
		return RestoreResult{}, fmt.Errorf("%w: restore: node %q is not among the peers", ErrConfig, cfg.NodeID)
	}
	id := uuid.New()
	if cfg.ClusterID != "" {
		var err error
		if id, err = uuid.Parse(cfg.ClusterID); err != nil {
			return RestoreResult{}, fmt.Errorf("%w: restore: cluster ID %q: %v", ErrConfig, cfg.ClusterID, err)
		}
	}
	if err := emptyDir(cfg.Dir); err != nil {
		return RestoreResult{}, err
	}
	info, err := ReadBackupInfo(r)
	if err != nil {
		return RestoreResult{}, err
	}
	if info.ClusterID == id.String() {
		return RestoreResult{}, fmt.Errorf("%w: restore: the new cluster's ID must differ from the backup's (%s)", ErrConfig, info.ClusterID)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return RestoreResult{}, fmt.Errorf("raftlog: restore: %w", err)
	}
	ident := identity{Format: 1, NodeID: cfg.NodeID, Partitions: info.Partitions, Shards: info.Shards, ClusterID: id.String()}
	pr := &progressReader{r: r, progressCount: progressCount{ctx: ctx, fn: cfg.Progress, total: info.Bytes() + backupCopyHdr*int64(info.Shards)}}
	err = func() error {
		for si := 0; si < info.Shards; si++ {
			if err := restoreShard(pr, cfg.Dir, ident, Shard(si), id, info, servers); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					err = fmt.Errorf("%w: the backup ends early: %w", ErrCorrupt, err)
				}
				return fmt.Errorf("raftlog: restore shard %d: %w", si, err)
			}
		}
		// Last: a directory without raftlog.json is not a node's.
		return writeIdentity(cfg.Dir, ident)
	}()
	if err != nil {
		// The directory was empty: nothing of value is removed.
		os.RemoveAll(cfg.Dir)
		return RestoreResult{}, err
	}
	return RestoreResult{Backup: info, ClusterID: id.String()}, nil
}

func hasServer(servers []raft.Server, id string) bool {
	for _, s := range servers {
		if string(s.ID) == id {
			return true
		}
	}
	return false
}

// emptyDir fails unless dir is missing or empty.
func emptyDir(dir string) error {
	if dir == "" {
		return fmt.Errorf("%w: restore: no directory", ErrConfig)
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("raftlog: restore: %w", err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("%w: restore: %s is not empty: restore into a new directory", ErrConfig, dir)
	}
	return nil
}

// restoreShard installs shard si's copy from r into the node's directory
// and saves a raft snapshot marker at its index, whose configuration is
// the new cluster's.
func restoreShard(r io.Reader, root string, ident identity, si Shard, id uuid.UUID, info BackupInfo, servers []raft.Server) error {
	var nb [backupCopyHdr]byte
	if _, err := io.ReadFull(r, nb[:]); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	size := int64(binary.BigEndian.Uint64(nb[:]))
	if size != info.ShardBytes[si] {
		return fmt.Errorf("%w: a copy of %d bytes, the manifest says %d", ErrCorrupt, size, info.ShardBytes[si])
	}
	dir := filepath.Join(root, fmt.Sprintf("g%d", si))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	e, err := state.Open(state.Options{Path: filepath.Join(dir, "state.db"), Shard: si, Partitions: ident.Partitions, Shards: ident.Shards, ScrubRate: -1})
	if err != nil {
		return err
	}
	lr := &io.LimitedReader{R: r, N: size}
	err = e.Restore(io.NopCloser(lr))
	if err == nil && info.Applied[si] == 0 {
		// An empty shard: Restore keeps the empty state without reading
		// the copy's body.
		_, err = io.Copy(io.Discard, lr)
	}
	if err == nil && lr.N != 0 {
		err = fmt.Errorf("%w: the copy ends %d bytes before its announced length", ErrCorrupt, lr.N)
	}
	if err == nil && e.Applied() != info.Applied[si] {
		err = fmt.Errorf("%w: the copy has applied index %d, the manifest says %d", ErrCorrupt, e.Applied(), info.Applied[si])
	}
	if err == nil && len(info.ExcludedKeyPrefixes) > 0 {
		err = e.ResealSegments()
	}
	if err == nil && si == 0 {
		err = e.ReplaceClusterID(id)
	}
	if cerr := e.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
	if err != nil {
		return err
	}
	// Raft's index must be at least 1 for a snapshot to count; the
	// marker's own index is the state's, which Open checks against.
	index := max(info.Applied[si], 1)
	// The store encodes the peers for old versions through a transport;
	// both of ours encode an address as its bytes.
	_, trans := raft.NewInmemTransport("")
	defer trans.Close()
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, restoredTerm, raft.Configuration{Servers: servers}, index, trans)
	if err != nil {
		return err
	}
	if _, err := sink.Write(state.MarkerSnapshot(info.Applied[si])); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
