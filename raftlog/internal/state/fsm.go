package state

import (
	"bufio"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// FSM is the shard's raft.FSM: a thin adapter that reads each entry's
// command byte, decodes it and dispatches it to the engine, one handler
// per command type. An entry that cannot be decoded, or has a command type
// this version does not know, is rejected: its response is an error
// wrapping ErrCorrupt, it changes nothing, and every replica, holding the
// same bytes and running the same decoder, rejects it alike. (A panic
// instead would crash every replica again on every restart: the entry
// stays in the log.) Leaders check what they propose, so only a bug or a
// mixed-version cluster produces one; DESIGN.md says how versions mix.
//
// Storage that fails under an apply (a damaged index value or page) stops
// applies on this replica (Engine.stopApplies) instead of crashing it.
//
// Contracts (hashicorp/raft): ApplyBatch and Restore run on raft's FSM
// goroutine, one at a time; Snapshot runs there too and must be quick;
// Persist of a returned snapshot runs concurrently with later applies.
type FSM struct{ e *Engine }

var _ raft.BatchingFSM = FSM{}

// NewFSM returns the raft.FSM of engine e.
func NewFSM(e *Engine) FSM { return FSM{e: e} }

// Apply implements raft.FSM for callers that do not batch.
func (f FSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies committed entries above the engine's applied index
// (raft hands a restarted node entries the state file already holds). The
// response of an append entry is a []core.AppendOutcome, one per request;
// of a group operation, a core.GroupOutcome; of a cluster ID proposal, the
// cluster ID in force after it (a string); of an entry that cannot be
// decoded, an error.
func (f FSM) ApplyBatch(logs []*raft.Log) []any {
	resp := make([]any, len(logs))
	applied := f.e.Applied()
	if len(logs) == 0 || logs[len(logs)-1].Index <= applied {
		return resp
	}
	start := time.Now()
	defer func() { f.e.metrics.apply.Observe(int64(time.Since(start))) }()
	err := f.e.guard("apply", func() error {
		b, ok := f.e.Begin()
		if !ok {
			return nil
		}
		for i, l := range logs {
			if l.Index <= applied {
				continue
			}
			if l.Type == raft.LogCommand {
				resp[i] = f.dispatch(&b, l)
				b.RaftBytes(len(l.Data))
			}
			b.Applied(l.Index)
		}
		if !b.End() {
			clear(resp)
			return nil
		}
		for i, l := range logs {
			if l.Index > applied {
				f.e.digest.fold(l.Index, resp[i], f.e.logger)
			}
		}
		return nil
	})
	if err != nil { // bbolt panicked on a damaged page
		f.e.stopApplies(err)
		clear(resp)
	}
	return resp
}

// dispatch applies one command entry by its type byte.
func (f FSM) dispatch(b *Batch, l *raft.Log) any {
	var cmd byte
	if len(l.Data) > 0 {
		cmd = l.Data[0]
	}
	switch cmd {
	case wire.CmdAppend:
		e, err := wire.DecodeEntry(l.Data)
		if err != nil {
			return f.rejected(l, err)
		}
		return b.Append(&e, l.Index)
	case wire.CmdGroup:
		t, op, err := wire.DecodeGroupEntry(l.Data)
		if err != nil {
			return f.rejected(l, err)
		}
		return b.Group(&op, t)
	case wire.CmdClusterID:
		id, err := wire.DecodeClusterID(l.Data)
		if err != nil {
			return f.rejected(l, err)
		}
		return b.ClusterID(id).String()
	case wire.CmdRetention:
		t, op, err := wire.DecodeRetentionEntry(l.Data)
		if err != nil {
			return f.rejected(l, err)
		}
		return b.Retention(&op, t)
	}
	return f.rejected(l, fmt.Errorf("%w: unknown command type %d", core.ErrCorrupt, cmd))
}

// rejected is the response to an entry that cannot be applied.
func (f FSM) rejected(l *raft.Log, err error) error {
	err = fmt.Errorf("raftlog: shard %d: entry at index %d rejected: %w", f.e.shard, l.Index, err)
	f.e.logger.Error(err.Error())
	return err
}

// Snapshot implements raft.FSM. It freezes the active table for the
// flusher and returns at once (it runs on the FSM goroutine, and holds
// applies up only if the previous table is still being written); Persist,
// which raft runs beside later applies, waits until the flusher has
// written it, so the state file covers everything applied up to here
// before raft may compact its log up to here. The snapshot itself records
// only that index, and its cost does not grow with history.
func (f FSM) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.e.freeze(true); err != nil {
		return nil, err
	}
	return markerSnapshot{index: f.e.Applied(), e: f.e}, nil
}

// Restore implements raft.FSM: the engine replaces its state with the full
// copy the leader sent.
func (f FSM) Restore(rc io.ReadCloser) error { return f.e.Restore(rc) }

// markerSnapshot is what the FSM hands raft for compaction.
type markerSnapshot struct {
	index uint64
	e     *Engine
}

func (s markerSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.e.waitCovered(s.index); err != nil {
		sink.Cancel()
		return err
	}
	if _, err := sink.Write(snapshotHeader{kind: snapshotMarker, index: s.index}.encode()); err != nil {
		sink.Cancel()
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	s.e.metrics.snapshotsTaken.Add(1)
	return nil
}

func (markerSnapshot) Release() {}

// SnapshotStore wraps raft's file store so that opening a marker yields a
// full copy of the live state.
type SnapshotStore struct {
	raft.SnapshotStore
	fsm *Engine
}

func (s *SnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(rc)
	hb, err := br.Peek(snapshotHdrLen)
	if err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("raftlog: snapshot %s: %w", id, err)
	}
	h, err := decodeSnapshotHeader(hb)
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	if h.kind == snapshotFull {
		return meta, readCloser{br, rc}, nil
	}
	rc.Close()
	full, size, err := s.fsm.openFullCopy()
	if err != nil {
		return nil, nil, err
	}
	m := *meta
	m.Size = size
	return &m, full, nil
}

// CatchUpToSnapshot brings the state file up to the newest snapshot in
// store when it is behind it, before raft starts. A follower that installs
// a snapshot from the leader has raft save it before the FSM restores it,
// and with NoSnapshotRestoreOnStart a restart takes the saved snapshot's
// index as applied without restoring anything: after a crash (or a failed
// Restore) in between, the file would stay behind, and the entries between
// its index and the snapshot's are in neither the file nor the raft log.
// The snapshot's own header says which state it holds (raft's index in
// its metadata may be higher: entries the FSM never sees, such as a new
// leader's no-op, count there). A full copy above the file is restored
// here. A marker above it means the file is not the one the marker was
// taken from (Snapshot flushes before it returns one), and opening fails
// rather than run on a state with a hole in it.
func (f *Engine) CatchUpToSnapshot(store raft.SnapshotStore) error {
	metas, err := store.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	applied := f.applied.Load()
	if len(metas) == 0 || metas[0].Index <= applied {
		return nil
	}
	m := metas[0]
	_, rc, err := store.Open(m.ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", m.ID, err)
	}
	br := bufio.NewReader(rc)
	var h snapshotHeader
	hb, err := br.Peek(snapshotHdrLen)
	if err == nil {
		h, err = decodeSnapshotHeader(hb)
	}
	switch {
	case err != nil:
		rc.Close()
		return fmt.Errorf("snapshot %s: %w", m.ID, err)
	case h.index <= applied:
		rc.Close()
		return nil
	case h.kind != snapshotFull:
		rc.Close()
		return fmt.Errorf("%w: the state file's applied index %d is behind snapshot marker %s (index %d): it is not the file the snapshot was taken from", core.ErrCorrupt, applied, m.ID, h.index)
	}
	if err := f.Restore(readCloser{br, rc}); err != nil {
		return fmt.Errorf("restore snapshot %s, saved but not restored: %w", m.ID, err)
	}
	return nil
}

// NewSnapshotStore wraps raft's snapshot store of engine e's shard.
func NewSnapshotStore(store raft.SnapshotStore, e *Engine) *SnapshotStore {
	return &SnapshotStore{SnapshotStore: store, fsm: e}
}

// IsFullCopy reports whether the stored snapshot id is a full copy of the
// state, which a follower receives from a leader, rather than the marker
// a node's own snapshot writes.
func IsFullCopy(store raft.SnapshotStore, id string) (bool, error) {
	_, rc, err := store.Open(id)
	if err != nil {
		return false, fmt.Errorf("open snapshot %s: %w", id, err)
	}
	defer rc.Close()
	h, err := readSnapshotHeader(rc)
	if err != nil {
		return false, fmt.Errorf("snapshot %s: %w", id, err)
	}
	return h.kind == snapshotFull, nil
}
