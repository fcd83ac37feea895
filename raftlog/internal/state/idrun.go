package state

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

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

// runLen is the length of the run of ids starting at ids[0] (one if ids
// is not empty), at most maxIDRun.
func runLen(ids func(i int) uuid.UUID, n int) int {
	if n == 0 {
		return 0
	}
	head := ids(0)
	room := idLowMask - idLow(head)
	j := 1
	for j < n && j < maxIDRun && uint64(j) <= room && ids(j) == idPlus(head, uint64(j)) {
		j++
	}
	return j
}

// at is e moved to the i-th ID of its run: where that ID went, and the
// length of the run from it.
func (e IDEntry) at(i uint64) IDEntry {
	return IDEntry{Partition: e.Partition, Offset: e.Offset + i, KeySeq: e.KeySeq + i, Time: e.Time, Count: e.Count - i}
}

// addRun records the run with head head in the table (the FSM goroutine,
// with fsm.mu held).
func (m *memTable) addRun(head uuid.UUID, e IDEntry) {
	if _, again := m.ids[head]; !again {
		if n := len(m.heads); n == 0 || bytes.Compare(m.heads[n-1][:], head[:]) < 0 {
			m.heads = append(m.heads, head)
		} else {
			i, _ := slices.BinarySearchFunc(m.heads, head, compareIDs)
			m.heads = slices.Insert(m.heads, i, head)
		}
	}
	m.ids[head] = e
}

func compareIDs(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }

// runs calls fn with every run in the tables and the file whose head lies
// in [lo, hi], until fn returns false.
func (v *layers) runs(lo, hi uuid.UUID, fn func(head uuid.UUID, e IDEntry) bool) error {
	for _, m := range [2]*memTable{v.active, v.frozen} {
		if m == nil {
			continue
		}
		i, _ := slices.BinarySearchFunc(m.heads, lo, compareIDs)
		for ; i < len(m.heads) && compareIDs(m.heads[i], hi) <= 0; i++ {
			if !fn(m.heads[i], m.ids[m.heads[i]]) {
				return nil
			}
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
	found := false
	err := v.runs(runFloor(id), id, func(head uuid.UUID, e IDEntry) bool {
		if i, ok := runIndex(head, id); ok && i < e.Count && (!found || e.Time >= best.Time) {
			best, found = e.at(i), true
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
