package state

import (
	"crypto/sha256"
	"fmt"
	"io"
	"path/filepath"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// Probe reaches into an engine for the tests of the packages above it:
// crash simulation, held flushes, the tables' sizes and the state file as
// stored. Production code never uses it.
type Probe struct{ f *Engine }

// Probe returns the engine's probe.
func (f *Engine) Probe() Probe { return Probe{f} }

// Crash stops the engine as a killed process would: the flusher stops
// after the flush in progress, nothing else is written, the tables are
// lost.
func (p Probe) Crash() error {
	f := p.f
	f.stopCompaction("crash")
	f.stopScrub()
	f.stopFlusher()
	f.lockWrites()
	defer f.unlockWrites()
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	f.closeSegFiles()
	return f.db.Load().Close()
}

// HoldFlushes makes the flusher wait, before it writes each table after
// the first skip ones, until release is closed (or the engine stops); it
// reports on the returned channel each table it holds. Call it before the
// first apply.
func (p Probe) HoldFlushes(release <-chan struct{}, skip int) <-chan struct{} {
	f := p.f
	held := make(chan struct{}, 100)
	n := 0
	f.beforeFlush = func() {
		if n++; n <= skip {
			return
		}
		held <- struct{}{}
		select {
		case <-release:
		case <-f.flushStop:
		}
	}
	return held
}

// HoldApplies makes the state machine wait, before it applies its next
// batch and every one after it, until release is closed. raft goes on
// storing and committing entries meanwhile: the replica's log is ahead of
// its state.
func (p Probe) HoldApplies(release <-chan struct{}) {
	hold := func() { <-release }
	p.f.beforeApply.Store(&hold)
}

// ActiveRecords is the number of records in the active table.
func (p Probe) ActiveRecords() int {
	p.f.mu.RLock()
	defer p.f.mu.RUnlock()
	return p.f.mem.n
}

// Frozen reports the last raft index of the frozen table, if one is.
func (p Probe) Frozen() (uint64, bool) {
	p.f.mu.RLock()
	defer p.f.mu.RUnlock()
	if p.f.frozen == nil {
		return 0, false
	}
	return p.f.frozen.last, true
}

// FileApplied is the applied index stored in the state file.
func (p Probe) FileApplied() (uint64, error) {
	var applied uint64
	err := p.f.view(func(tx *bolt.Tx) error {
		var err error
		applied, err = fileApplied(tx)
		return err
	})
	return applied, err
}

// View runs fn in a read transaction of the state file alone.
func (p Probe) View(fn func(tx *bolt.Tx) error) error { return p.f.view(fn) }

// MetaBucket is the name of the state file's per-replica bucket.
func (Probe) MetaBucket() []byte { return bucketMeta }

// EachID calls fn with every record ID in the state file's ID index (each
// ID of each run) and the partition it was appended to.
func (p Probe) EachID(fn func(id uuid.UUID, partition core.Partition) error) error {
	return p.f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketIDs).ForEach(func(k, v []byte) error {
			v, err := openValue(k, v)
			if err != nil {
				return err
			}
			e, err := decodeIDEntry(v)
			if err != nil {
				return err
			}
			for i := uint64(0); i < e.Count; i++ {
				if err := fn(idPlus(uuid.UUID(k), i), e.Partition); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// LookupID reports where record ID id was appended (tables, then file),
// whether or not it has expired.
func (p Probe) LookupID(id uuid.UUID) (IDEntry, bool, error) { return p.f.LookupID(id) }

// OpenFullCopy starts a full copy of the state, as sent to a follower.
func (p Probe) OpenFullCopy() (io.ReadCloser, int64, error) { return p.f.openFullCopy() }

// SegmentDigests returns, by name under the shard's directory, the SHA-256
// of each segment file's bytes up to the length the index records.
func (p Probe) SegmentDigests() (map[string]string, error) {
	f := p.f
	out := map[string]string{}
	err := f.view(func(tx *bolt.Tx) error {
		for _, part := range f.partitions {
			err := tx.Bucket(partitionBucketName(part)).Bucket(bucketSegs).ForEach(func(k, v []byte) error {
				s, err := openSegEntry(k, v)
				if err != nil {
					return err
				}
				name := f.segPath(part, s.base)
				fh, err := f.segFile(name, false)
				if err != nil {
					return err
				}
				h := sha256.New()
				if _, err := io.Copy(h, io.NewSectionReader(fh, 0, s.length)); err != nil {
					return err
				}
				rel, _ := filepath.Rel(f.dir, name)
				out[rel] = fmt.Sprintf("%d:%x", s.length, h.Sum(nil))
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}
