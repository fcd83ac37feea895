package raftlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/state"
)

// LogStore names the storage engine of a shard's raft log (the entries
// raft replicates, and its term and vote).
type LogStore string

const (
	// LogStoreWAL is hashicorp/raft-wal: append-only segment files with
	// one fsync per write and a CRC over each write, so a write torn by a
	// crash is found and dropped on restart (it was never acknowledged).
	LogStoreWAL LogStore = "wal"
	// LogStoreBolt is hashicorp/raft-boltdb/v2: a bbolt B-tree, two
	// fsyncs per write. Groups created before the WAL became the default
	// use it.
	LogStoreBolt LogStore = "bolt"
)

// groupLog is what raft needs of a group's log store.
type groupLog interface {
	raft.LogStore
	raft.StableStore
	io.Closer
}

const (
	boltLogFile = "raft.db"
	walLogDir   = "wal"
)

// storedLogKind reports which log store group directory dir holds, or ""
// if it holds none yet.
func storedLogKind(dir string) (LogStore, error) {
	var found []LogStore
	if _, err := os.Stat(filepath.Join(dir, boltLogFile)); err == nil {
		found = append(found, LogStoreBolt)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, walLogDir, "wal-meta.db")); err == nil {
		found = append(found, LogStoreWAL)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%w: %s holds both a bolt and a WAL raft log", core.ErrCorrupt, dir)
}

// openShardLog opens the raft log in shard directory dir: the store it
// already holds, or want (default LogStoreWAL) for a new group.
func openShardLog(dir string, cfg *Config, logger hclog.Logger) (groupLog, error) {
	want := cfg.LogStore
	kind, err := storedLogKind(dir)
	if err != nil {
		return nil, err
	}
	switch {
	case kind == "" && want == "":
		kind = LogStoreWAL
	case kind == "":
		kind = want
	case want != "" && want != kind:
		return nil, fmt.Errorf("%w: %s holds a %q raft log, LogStore is %q", ErrConfig, dir, kind, want)
	}
	if kind == LogStoreBolt {
		opts := state.BoltOptions()
		opts.InitialMmapSize = 0
		return raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, boltLogFile), BoltOptions: opts})
	}
	wdir := filepath.Join(dir, walLogDir)
	if err := os.MkdirAll(wdir, 0o700); err != nil {
		return nil, err
	}
	if err := checkWALTail(wdir); err != nil {
		return nil, err
	}
	withLogger := wal.WithLogger(logger.Named("wal"))
	return wal.Open(wdir, withLogger, wal.WithSegmentSize(cfg.WALSegmentBytes))
}
