package eventstore

import (
	"context"
	"log/slog"
	"time"

	"github.com/esraft/esraft/raftlog"
)

// Log is the replicated log a Store runs on: a replica embedded in this
// process (*raftlog.Log, what Open opens) or a thin client of a cluster's
// nodes (*raftlog.Remote, what package client dials). Both give every
// method the same meaning, so a Store behaves alike over either; reads are
// served by the replica (embedded) or by the node the client is connected
// to, which never serves a client a state older than one it has seen.
type Log interface {
	Partitions() int
	Shards() int
	Partition(key string) raftlog.Partition
	Logger() *slog.Logger
	Close() error

	Append(ctx context.Context, key string, recs []raftlog.NewRecord, opts ...raftlog.AppendOption) (raftlog.AppendResult, error)
	DeleteKey(ctx context.Context, key string, opts ...raftlog.AppendOption) (raftlog.AppendResult, error)
	TruncateKey(ctx context.Context, key string, before uint64, opts ...raftlog.AppendOption) (raftlog.AppendResult, error)

	Read(ctx context.Context, p raftlog.Partition, from uint64, opt raftlog.ReadOptions) ([]raftlog.Record, error)
	ReadKey(ctx context.Context, p raftlog.Partition, key string, from uint64, opt raftlog.ReadOptions) ([]raftlog.Record, error)
	KeyInfo(ctx context.Context, p raftlog.Partition, key string) (raftlog.KeyInfo, error)
	ListKeys(ctx context.Context, prefix, after string, limit int) ([]raftlog.ListedKey, error)
	NextOffset(p raftlog.Partition) (uint64, error)
	OffsetAtTime(ctx context.Context, p raftlog.Partition, t time.Time) (uint64, error)
	Wait(ctx context.Context, p raftlog.Partition, offset uint64) error
	WaitApplied(ctx context.Context, pos raftlog.Position) error
	ReadBarrier(ctx context.Context, s raftlog.Shard) error

	JoinGroup(ctx context.Context, group, member string, sessionTimeout time.Duration) (raftlog.GroupState, error)
	JoinGroupAt(ctx context.Context, group, member string, sessionTimeout time.Duration, start raftlog.StartPosition) (raftlog.GroupState, error)
	ResetGroup(ctx context.Context, group string, start raftlog.StartPosition) (raftlog.GroupState, error)
	ForceResetGroup(ctx context.Context, group string, start raftlog.StartPosition) (raftlog.GroupState, error)
	DeleteGroup(ctx context.Context, group string) error
	Heartbeat(ctx context.Context, group, member string, release []raftlog.Partition) (raftlog.GroupState, error)
	LeaveGroup(ctx context.Context, group, member string) error
	CommitOffsets(ctx context.Context, group, member string, commits []raftlog.OffsetCommit) (raftlog.GroupState, error)
	RetryParked(ctx context.Context, group string, partition raftlog.Partition, offset uint64) error
	SkipParked(ctx context.Context, group string, partition raftlog.Partition, offset uint64) error
	GroupState(group string) (raftlog.GroupState, bool, error)
	WaitGroupChange(ctx context.Context, group string, gen uint64) error
}

var (
	_ Log = (*raftlog.Log)(nil)
	_ Log = (*raftlog.Remote)(nil)
)
