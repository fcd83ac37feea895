package state

import (
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// The engine's tests drive it as raft does, through its FSM.

func (f *Engine) ApplyBatch(logs []*raft.Log) []any { return NewFSM(f).ApplyBatch(logs) }

func (f *Engine) Snapshot() (raft.FSMSnapshot, error) { return NewFSM(f).Snapshot() }

// openTest opens an engine as openFSM did before the engine had Options.
func openTest(path string, shard, partitions, shards int, retention time.Duration) (*Engine, error) {
	return Open(Options{Path: filepath.Clean(path), Shard: core.Shard(shard), Partitions: partitions, Shards: shards, IDRetention: retention})
}
