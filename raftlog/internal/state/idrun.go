package state

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/google/uuid"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// Runs of record IDs. The ID index holds one entry per run of consecutive
// IDs that an append gives consecutive records, keyed by the run's first
// ID (its head), instead of one entry per ID: the IDs a node makes for an
// append's records are such a run (core.NewIDRun), and so are a Kafka
// producer's (a sequence number last). Two IDs are consecutive when their
// first 66 bits are equal (time and version, or a producer's hash, and the
// variant) and their last 62 bits differ by one. An entry's IDEntry says
// where the head went and Count, the run's length; the i-th ID of the run
// went to Offset+i with key sequence KeySeq+i.
//
// An ID is held when a run in the index covers it. Runs are at most
// maxIDRun long, so the runs that can cover an ID have heads between
// runFloor(id) and id: a lookup reads that range, which the index keeps
// sorted (bbolt; the tables' heads slices). Of several covering runs (an
// ID appended again after it expired) the newest counts, so what a lookup
// answers never depends on when a replica pruned expired entries.

// maxIDRun is the longest run one index entry holds; an append's longer
// run is split (at the same places on every replica).
const maxIDRun = 4096

// idLowMask selects the 62 bits in which a run's IDs count up.
const idLowMask = 1<<62 - 1

func idLow(id uuid.UUID) uint64 { return binary.BigEndian.Uint64(id[8:]) & idLowMask }

// idPlus is id advanced by i in its last 62 bits; the caller checks that
// it does not overflow them (idLow(id)+i <= idLowMask).
func idPlus(id uuid.UUID, i uint64) uuid.UUID {
	v := binary.BigEndian.Uint64(id[8:])
	binary.BigEndian.PutUint64(id[8:], v&^idLowMask|(v&idLowMask+i))
	return id
}

// runIndex is id's place in the run whose head is head, if it may be in
// that run (same first 66 bits, not below the head).
func runIndex(head, id uuid.UUID) (uint64, bool) {
	if !bytes.Equal(head[:8], id[:8]) || head[8]>>6 != id[8]>>6 {
		return 0, false
	}
	h, l := idLow(head), idLow(id)
	return l - h, l >= h
}

// runFloor is the lowest head of a run that can cover id.
func runFloor(id uuid.UUID) uuid.UUID {
	v := binary.BigEndian.Uint64(id[8:])
	binary.BigEndian.PutUint64(id[8:], v-min(v&idLowMask, maxIDRun-1))
	return id
}

// runLen is the length of the run of IDs starting at recs[0]'s (one if
// recs is not empty), at most maxIDRun.
func runLen(recs []core.NewRecord) int {
	if len(recs) == 0 {
		return 0
	}
	head := recs[0].ID
	room := idLowMask - idLow(head)
	j := 1
	for j < len(recs) && j < maxIDRun && uint64(j) <= room && recs[j].ID == idPlus(head, uint64(j)) {
		j++
	}
	return j
}

// at is e moved to the i-th ID of its run: where that ID went, and the
// length of the run from it.
func (e IDEntry) at(i uint64) IDEntry {
	return IDEntry{Partition: e.Partition, Offset: e.Offset + i, KeySeq: e.KeySeq + i, Time: e.Time, Count: e.Count - i}
}

// idBucketBits: a table finds its runs by bucket, an ID with the last
// idBucketBits bits cleared; a run is listed in its head's bucket, and
// maxIDRun is at most one bucket long, so the runs that can cover an ID are
// in its bucket or the one before.
const idBucketBits = 12

// idBucket is the bucket of id.
func idBucket(id uuid.UUID) uuid.UUID {
	id[15] = 0
	id[14] &^= 1<<(idBucketBits-8) - 1
	return id
}

// headList is the heads of a bucket's runs: one, usually.
type headList struct {
	first uuid.UUID
	more  []uuid.UUID
}

// addRun records the run with head head in the table (the FSM goroutine,
// with fsm.mu held).
func (m *memTable) addRun(head uuid.UUID, e IDEntry) {
	if _, again := m.ids[head]; !again {
		b := idBucket(head)
		if hl, ok := m.buckets[b]; !ok {
			m.buckets[b] = headList{first: head}
		} else {
			hl.more = append(hl.more, head)
			m.buckets[b] = hl
		}
	}
	m.ids[head] = e
}

// tableRuns calls fn with every run of m whose head lies in [lo, hi]
// (IDs of one run space, less than two buckets apart), until fn returns
// false.
func (m *memTable) tableRuns(lo, hi uuid.UUID, fn func(head uuid.UUID, e IDEntry) bool) bool {
	for b := idBucket(lo); ; {
		if hl, ok := m.buckets[b]; ok {
			for i := -1; i < len(hl.more); i++ {
				h := hl.first
				if i >= 0 {
					h = hl.more[i]
				}
				if compareIDs(h, lo) >= 0 && compareIDs(h, hi) <= 0 && !fn(h, m.ids[h]) {
					return false
				}
			}
		}
		if idLow(b)+1<<idBucketBits > idLowMask {
			return true
		}
		if b = idPlus(b, 1<<idBucketBits); compareIDs(b, hi) > 0 {
			return true
		}
	}
}

func compareIDs(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }

// runs calls fn with every run in the tables and the file whose head lies
// in [lo, hi], until fn returns false.
func (v *layers) runs(lo, hi uuid.UUID, fn func(head uuid.UUID, e IDEntry) bool) error {
	for _, m := range [2]*memTable{v.active, v.frozen} {
		if m != nil && !m.tableRuns(lo, hi, fn) {
			return nil
		}
	}
	if v.ids == nil {
		v.ids = v.tx.Bucket(bucketIDs)
		v.maxID, _ = v.ids.Cursor().Last()
	}
	if v.maxID == nil || bytes.Compare(lo[:], v.maxID) > 0 {
		return nil
	}
	c := v.ids.Cursor()
	for k, b := c.Seek(lo[:]); k != nil && bytes.Compare(k, hi[:]) <= 0; k, b = c.Next() {
		p, err := openValue(k, b)
		if err != nil {
			return err
		}
		e, err := decodeIDEntry(p)
		if err != nil {
			return err
		}
		if len(k) != 16 {
			return fmt.Errorf("%w: record ID key %x", core.ErrCorrupt, k)
		}
		if !fn(uuid.UUID(k), e) {
			return nil
		}
	}
	return nil
}

// ID returns where id went by the newest run that covers it, whether or
// not that run has expired (the caller judges).
func (v *layers) ID(id uuid.UUID) (IDEntry, bool, error) {
	var best IDEntry
	var bestHead uuid.UUID
	found := false
	err := v.runs(runFloor(id), id, func(head uuid.UUID, e IDEntry) bool {
		// The newest run (ties, which deduplication prevents, to the
		// greatest head: the answer must not depend on the order of visits).
		if i, ok := runIndex(head, id); ok && i < e.Count && (!found || e.Time > best.Time || e.Time == best.Time && compareIDs(head, bestHead) > 0) {
			best, bestHead, found = e.at(i), head, true
		}
		return true
	})
	return best, found && err == nil, err
}

// heldIn reports whether an ID of [lo, hi] (of one run space) is held by a
// run that has not expired before cutoff: a newer run covering the same
// ID is newer still, so the ID is held.
func (v *layers) heldIn(lo, hi uuid.UUID, cutoff int64) (bool, error) {
	held := false
	err := v.runs(runFloor(lo), hi, func(head uuid.UUID, e IDEntry) bool {
		if e.Time < cutoff {
			return true
		}
		if _, ok := runIndex(head, hi); !ok {
			return true
		}
		if i, ok := runIndex(head, lo); !ok || i < e.Count {
			held = true // the run starts inside [lo, hi], or covers lo
		}
		return !held
	})
	return held, err
}
