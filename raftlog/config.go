package raftlog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/esraft/esraft/internal/logging"
	"github.com/esraft/esraft/internal/mux"
	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/state"
)

// Peer is a voter of a statically bootstrapped cluster.
type Peer struct {
	ID   string
	Addr string
}

// Config configures a Log. Only Dir is required: with Addr empty the log is
// the embedded single-node default, with no network listener at all.
type Config struct {
	// Dir holds the node's data: one sub-directory per shard.
	Dir string

	// NodeID names this node in the cluster; default "node1". It must not
	// change across restarts.
	NodeID string
	// Addr is the cluster address to listen on ("127.0.0.1:7000"). All shards
	// and node-to-node calls share it. Empty: single node, no network.
	Addr string
	// Advertise is the address other nodes dial; default the listener's
	// address.
	Advertise string
	// Listener, if set, is used instead of listening on Addr.
	Listener net.Listener
	// Dialer, if set, opens connections to other nodes (tests); with TLS
	// it carries the raw connection the handshake runs over.
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
	// TLS, if set, secures the cluster address with mutual TLS 1.3 and
	// node identities in certificates; plaintext is refused. Without it
	// (development) membership changes are taken from loopback peers only
	// and Open warns when the cluster address is beyond loopback.
	TLS *TLSConfig
	// Peers bootstraps a new cluster: every voter, this node included, with
	// the same list on every node. A node with no state first probes its
	// peers: it forms the cluster with a majority of them that have no
	// state either, or, if a cluster exists, rejoins it as a non-voter and
	// is promoted once caught up (DESIGN.md). Ignored once the node has
	// state.
	Peers []Peer
	// Join is the cluster address of any member; a node with no state asks
	// it to add this node to every shard, as a non-voter until caught up.
	Join string
	// NonVoter joins as a non-voter: it receives every shard's log and
	// serves reads but never counts toward a quorum.
	NonVoter bool
	// ManualPromotion leaves a node that joined, or rejoined after losing
	// its data, a non-voter until an operator calls AddVoter; by default
	// it promotes itself once caught up with the leader.
	ManualPromotion bool

	// Partitions is the number of partitions P (default 8); Shards the
	// number of raft groups S (default 1). Partition p lives in shard
	// p mod S. Both are fixed when the log is created.
	Partitions int
	Shards     int

	// MaxRecordBytes bounds one record's value plus headers (default 1 MiB).
	MaxRecordBytes int
	// MaxBatchRecords and MaxBatchBytes bound one Append call
	// (defaults 10,000 records and 8 MiB).
	MaxBatchRecords int
	MaxBatchBytes   int
	// MaxEntryBytes and MaxEntryRequests bound one raft entry of group
	// commit (defaults 8 MiB and 1,024 appends); a single append larger than
	// MaxEntryBytes still goes alone in its own entry.
	MaxEntryBytes    int
	MaxEntryRequests int
	// Linger is how long group commit waits for more appends before
	// proposing an entry when the pipeline is idle (default 0: appends wait
	// only while earlier entries are in flight).
	Linger time.Duration
	// MaxInflight is how many raft entries of one shard may be in flight
	// at once (default 1).
	MaxInflight int
	// CohortWait is how long, at most, after an entry's appends were
	// answered, group commit waits for their callers to append again
	// before it proposes the next entry (default 500us; negative: not at
	// all). Callers that append in a loop then share one raft round
	// instead of alternating between two (see internal/route/batcher.go).
	CohortWait time.Duration
	// PipelineBytes lets one more entry than MaxInflight be in flight
	// while every entry in flight carries at least this many bytes, so
	// raft writes and replicates a large entry while the state machine
	// applies the one before (default 256 KiB; negative: never). Small
	// entries keep to MaxInflight and the cohort wait.
	PipelineBytes int
	// LogStore holds each shard's raft log: LogStoreWAL (the default for a
	// new shard) or LogStoreBolt. A shard that already has a log keeps the
	// store it was created with; naming the other one is an ErrConfig.
	LogStore LogStore
	// WALSegmentBytes is the size of the segment files of a LogStoreWAL
	// raft log (default 8 MiB, at least 16 KiB, at most 1 GiB). raft-wal
	// preallocates each segment, so a node needs about this much free
	// space per shard to start; it drops compacted entries a whole segment
	// at a time. Existing segments keep their size.
	WALSegmentBytes int
	// ScrubBytesPerSecond bounds the background scrub, which re-reads each
	// shard's state segments (the active one up to its last flush) and
	// index values against their checksums, one pass every ScrubInterval
	// (default 16 MiB/s; negative: no scrub). Damage it finds shows in
	// ShardStatus.Damage.
	ScrubBytesPerSecond int64
	// ScrubInterval is the time from the end of one scrub pass to the start
	// of the next (default 1h).
	ScrubInterval time.Duration
	// ApplyDigestEvery, if not 0, has each replica log, at INFO, a digest
	// of what it decided for every window of that many raft indexes
	// ("raftlog: apply digest", with shard, from, to and digest): replicas
	// decide alike, so the first window whose digests differ between
	// nodes holds the first entry a replica decided differently. A
	// diagnostic, off by default; the fault suite compares them.
	ApplyDigestEvery uint64
	// ApplyTrace, if set, receives a line per applied command entry: its
	// raft index and what the replica decided (offsets, key sequences,
	// times, refusals; a group's state). A diagnostic for finding the
	// entry where replicas part, after the apply digests named the
	// window; it costs a write per entry.
	ApplyTrace io.Writer
	// IDRetention is how long record IDs are remembered for deduplication
	// (default 24h), measured on leader-stamped entry times.
	IDRetention time.Duration
	// RetentionTick is how often the leader of a shard that has a max-age
	// retention rule proposes an entry that only advances the shard's
	// time, when nothing else was applied in that time: expiry is judged
	// against the applied time, which otherwise stands still while no
	// one writes (default 1 s; negative: never).
	RetentionTick time.Duration
	// ScavengeInterval is how often the background scavenger runs on
	// each shard this node leads (Log.Scavenge: segments with nothing
	// readable are removed on every replica; default 10 min; negative:
	// never, Scavenge only). ScavengeBytesPerSecond bounds how fast it
	// reads the segments it weighs (default 32 MiB/s; negative: no bound).
	ScavengeInterval       time.Duration
	ScavengeBytesPerSecond int64
	// IndexCompactBytesPerSecond bounds how fast a scavenge copies the
	// keys and values of the state index when it compacts it (default
	// 8 MiB/s; negative: no bound): appends go on meanwhile, and a faster
	// copy takes more of the CPU and disk they need (BENCHMARKS.md).
	IndexCompactBytesPerSecond int64

	// Raft timing; zero values take hashicorp/raft's defaults, except
	// CommitTimeout (default 10 ms: how late an idle leader tells followers
	// of a commit, which bounds read-your-writes waits on a follower).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// The raft log is compacted after flushes of the state files once
	// 64 MiB of entries are covered since the last compaction, and also,
	// as hashicorp/raft does, every SnapshotThreshold entries (default
	// 8192) checked every SnapshotInterval (default 2m). TrailingLogs
	// entries are kept after a compaction so slightly lagging followers
	// catch up from the log rather than from a full copy (default: about
	// 16 MiB of entries, at least 64 and at most 1,024 entries).
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64

	// HandoffTimeout bounds how long Close, on a node that leads shards
	// and has other voters, waits in all for those shards to hand their
	// leadership to an up-to-date voter before it stops raft, so writes
	// move on without waiting for an election timeout (default 2 s;
	// negative: no hand-off, Close stops raft as a crash would).
	HandoffTimeout time.Duration
	// BalanceInterval is how often a node checks that it leads no more
	// than its share, ceil(S / voters), of the S shards, and the least time
	// between two leadership transfers it makes to give the excess to
	// voters that lead fewer (balance.go). Default 2 s; negative: never.
	// A log with one shard has nothing to balance.
	BalanceInterval time.Duration

	// MaxConns and MaxConnsPerIP bound the connections open at once on
	// the cluster address, in total and from one remote IP address; an
	// excess connection is closed as soon as it is accepted. Defaults
	// 1,024 and 256, each raised to 64 per shard when that is more (a
	// peer holds up to about six raft connections per shard, and nodes
	// sharing an address share MaxConnsPerIP). IdleTimeout is how long a
	// node-to-node call connection may sit with nothing in flight before
	// it is closed (default 2 min; give every node the same value). A
	// negative value removes the limit. See mux.Limits for the other
	// bounds on the cluster port.
	MaxConns      int
	MaxConnsPerIP int
	IdleTimeout   time.Duration
	// MaxClientCalls bounds the calls of thin clients (Remote) this node
	// serves at once, long-poll waits included (default 4,096); one more
	// is refused at once with ErrBusy, which the client retries after a
	// backoff. Each such call also ends within a bound of its own (a
	// wait after 10 s, any other call after 30 s). Negative: no limit.
	MaxClientCalls int

	// Logger receives the log's lines, raft's included (named "raftlog",
	// with a "node" attribute); nil means WARN and above, as text, to
	// stderr. Raft reports normal leader changes with some WARN and ERROR
	// lines ("failed to contact", "failed to appendEntries").
	Logger *slog.Logger

	// flushRecords overrides the in-memory table's flush threshold (tests).
	flushRecords int
	// compactEveryBytes overrides snapshotEveryBytes (tests).
	compactEveryBytes uint64
	// stateSegmentBytes overrides the size at which state segments are
	// sealed (tests; every replica must use the same).
	stateSegmentBytes int64
	// stateFS, if set, is the file layer of the state engines' segment
	// files (tests inject write failures with it).
	stateFS state.FS
	// failRestore, if set, fails the FSM's Restore while it returns true
	// (tests: raft has saved the snapshot, the state file is not replaced,
	// as after a crash in between).
	failRestore func() bool
}

func (c *Config) setDefaults() {
	if c.NodeID == "" {
		c.NodeID = "node1"
	}
	if c.Partitions == 0 {
		c.Partitions = 8
	}
	if c.Shards == 0 {
		c.Shards = 1
	}
	if c.MaxRecordBytes == 0 {
		c.MaxRecordBytes = 1 << 20
	}
	if c.MaxBatchRecords == 0 {
		c.MaxBatchRecords = 10000
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = 8 << 20
	}
	if c.MaxClientCalls == 0 {
		c.MaxClientCalls = 4096
	}
	if c.MaxEntryBytes == 0 {
		c.MaxEntryBytes = 8 << 20
	}
	if c.MaxEntryRequests == 0 {
		c.MaxEntryRequests = 1024
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 1
	}
	if c.CohortWait == 0 {
		c.CohortWait = 500 * time.Microsecond
	}
	if c.PipelineBytes == 0 {
		c.PipelineBytes = 256 << 10
	}
	if c.IDRetention == 0 {
		c.IDRetention = 24 * time.Hour
	}
	if c.RetentionTick == 0 {
		c.RetentionTick = time.Second
	}
	if c.ScavengeInterval == 0 {
		c.ScavengeInterval = 10 * time.Minute
	}
	if c.ScavengeBytesPerSecond == 0 {
		c.ScavengeBytesPerSecond = 32 << 20
	}
	if c.IndexCompactBytesPerSecond == 0 {
		c.IndexCompactBytesPerSecond = 8 << 20
	}
	if c.WALSegmentBytes == 0 {
		c.WALSegmentBytes = 8 << 20
	}
	if c.HandoffTimeout == 0 {
		c.HandoffTimeout = 2 * time.Second
	}
	if c.BalanceInterval == 0 {
		c.BalanceInterval = 2 * time.Second
	}
	c.Logger = logging.OrDefault(c.Logger)
}

// muxLimits are the cluster port's limits; zero fields take mux's defaults.
func (c *Config) muxLimits() mux.Limits {
	l := mux.Limits{MaxConns: c.MaxConns, MaxConnsPerIP: c.MaxConnsPerIP, IdleTimeout: c.IdleTimeout}
	perShard := 64 * c.Shards
	if l.MaxConns == 0 {
		l.MaxConns = max(mux.DefaultMaxConns, perShard)
	}
	if l.MaxConnsPerIP == 0 {
		l.MaxConnsPerIP = max(mux.DefaultMaxConnsPerIP, perShard)
	}
	return l
}

// Validate reports the first problem with the configuration, after defaults.
func (c *Config) Validate() error {
	c.setDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	switch {
	case c.Dir == "":
		return bad("Dir is required")
	case c.Partitions < 1 || c.Partitions > core.MaxPartitions:
		return bad("Partitions %d not in 1..%d", c.Partitions, core.MaxPartitions)
	case c.Shards < 1 || c.Shards > core.MaxShards || c.Shards > c.Partitions:
		return bad("Shards %d not in 1..min(%d, Partitions)", c.Shards, core.MaxShards)
	case c.MaxRecordBytes < 1 || c.MaxBatchRecords < 1 || c.MaxBatchBytes < 1 ||
		c.MaxEntryBytes < 1 || c.MaxEntryRequests < 1 || c.MaxInflight < 1:
		return bad("limits must be positive")
	case c.LogStore != "" && c.LogStore != LogStoreWAL && c.LogStore != LogStoreBolt:
		return bad("LogStore %q is neither %q nor %q", c.LogStore, LogStoreWAL, LogStoreBolt)
	case c.WALSegmentBytes < 16<<10 || c.WALSegmentBytes > 1<<30:
		return bad("WALSegmentBytes %d not in 16 KiB..1 GiB", c.WALSegmentBytes)
	case c.IDRetention < 0:
		return bad("IDRetention is negative")
	case c.ScrubInterval < 0:
		return bad("ScrubInterval is negative")
	case c.Addr == "" && c.Listener == nil && (len(c.Peers) > 0 || c.Join != "" || c.NonVoter):
		return bad("Peers, Join and NonVoter need a cluster address (Addr)")
	case len(c.Peers) > 0 && c.Join != "":
		return bad("Peers and Join are exclusive")
	case c.NonVoter && c.Join == "":
		return bad("a NonVoter must Join a cluster")
	case c.TLS != nil && c.Addr == "" && c.Listener == nil:
		return bad("TLS needs a cluster address (Addr)")
	}
	if c.TLS != nil {
		if err := c.TLS.validate(c.NodeID); err != nil {
			return bad("%v", err)
		}
	}
	if len(c.Peers) > 0 {
		self := false
		seen := map[string]bool{}
		for _, p := range c.Peers {
			if p.ID == "" || p.Addr == "" {
				return bad("peer %+v needs an ID and an address", p)
			}
			if seen[p.ID] {
				return bad("peer %q listed twice", p.ID)
			}
			seen[p.ID] = true
			self = self || p.ID == c.NodeID
		}
		if !self {
			return bad("Peers does not list this node %q", c.NodeID)
		}
	}
	return nil
}
