package faulttest

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/systemtest/faulttest/wire"
)

// history builds a clean three-node history: n appends of one event each
// to stream "s" in partition 0, all acknowledged, and the logs holding
// them.
func history(n int) ([]*Op, []NodeLog) {
	var ops []*Op
	var evs []wire.ReadEvent
	t0 := time.Unix(1000, 0)
	for i := range n {
		id := uuid.New()
		ops = append(ops, &Op{
			Stream: "s", Owned: true, Expect: int64(i), IDs: []uuid.UUID{id}, Status: OpAcked,
			Attempts: []Attempt{{Start: t0.Add(time.Duration(i) * time.Second), End: t0.Add(time.Duration(i)*time.Second + 10*time.Millisecond), Outcome: wire.OutcomeOK}},
			Res:      wire.AppendResponse{Outcome: wire.OutcomeOK, FirstOffset: uint64(i), FirstVersion: uint64(i + 1), LastVersion: uint64(i + 1)},
		})
		evs = append(evs, wire.ReadEvent{ID: id, Stream: "s", Version: uint64(i + 1), Offset: uint64(i)})
	}
	var logs []NodeLog
	for node := range 3 {
		logs = append(logs, NodeLog{
			Node: node, Heads: []uint64{uint64(n)}, Parts: [][]wire.ReadEvent{append([]wire.ReadEvent(nil), evs...)},
			Digests: []string{"same-digest"},
		})
	}
	return ops, logs
}

func TestCheckCleanHistory(t *testing.T) {
	ops, logs := history(5)
	r := Check(ops, logs, nil, nil, []Fault{{Kind: FaultKillLeader, Start: time.Unix(1001, 500)}, {Kind: FaultKillLeader, Group: 1, Start: time.Unix(1001, 500)}})
	require.Empty(t, r.Violations())
	require.Equal(t, 5, r.Acked)
	require.Equal(t, 5, r.FinalRecords)
	// The first append sent after the fault (at 1002 s) took 10 ms.
	require.Equal(t, time.Second+10*time.Millisecond-500, r.Resume[FaultKillLeader].P50)
	// No append went to group 1: writes there never resumed.
	require.Equal(t, 1, r.Unresumed)
}

// TestCheckFindsViolations breaks a clean history in one way at a time and
// expects the checker to name it.
func TestCheckFindsViolations(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(ops []*Op, logs []NodeLog, obs *observed)
		want   func(r *Report) int
	}{
		{"lost on every node", func(ops []*Op, logs []NodeLog, _ *observed) {
			for i := range logs {
				logs[i].Parts[0] = logs[i].Parts[0][:4]
			}
		}, func(r *Report) int { return r.LostAcked }},
		{"lost on one node", func(ops []*Op, logs []NodeLog, _ *observed) {
			logs[2].Parts[0] = logs[2].Parts[0][:4]
			logs[2].Digests[0] = "other"
		}, func(r *Report) int { return r.LostAcked }},
		{"divergent digest", func(ops []*Op, logs []NodeLog, _ *observed) {
			logs[1].Digests[0] = "other"
		}, func(r *Report) int { return r.DivergentPartitions }},
		{"divergent offset", func(ops []*Op, logs []NodeLog, _ *observed) {
			logs[1].Parts[0][2], logs[1].Parts[0][3] = logs[1].Parts[0][3], logs[1].Parts[0][2]
		}, func(r *Report) int { return r.DivergentOffsets }},
		{"duplicate", func(ops []*Op, logs []NodeLog, _ *observed) {
			e := logs[0].Parts[0][1]
			e.Offset, e.Version = 5, 6
			logs[0].Parts[0] = append(logs[0].Parts[0], e)
		}, func(r *Report) int { return r.Duplicates }},
		{"offset gap", func(ops []*Op, logs []NodeLog, _ *observed) {
			logs[0].Parts[0][4].Offset = 7
		}, func(r *Report) int { return r.OffsetGaps }},
		{"offset reorder", func(ops []*Op, logs []NodeLog, _ *observed) {
			logs[0].Parts[0][4].Offset = 2
		}, func(r *Report) int { return r.OffsetReorders }},
		{"version gap", func(ops []*Op, logs []NodeLog, _ *observed) {
			logs[0].Parts[0][3].Version = 9
		}, func(r *Report) int { return r.VersionGaps }},
		{"ack mismatch", func(ops []*Op, logs []NodeLog, _ *observed) {
			ops[2].Res.FirstOffset = 3
		}, func(r *Report) int { return r.AckMismatch }},
		{"expected version violated", func(ops []*Op, logs []NodeLog, _ *observed) {
			ops[2].Expect = 7
		}, func(r *Report) int { return r.ExpectViolated }},
		{"rejected but present", func(ops []*Op, logs []NodeLog, _ *observed) {
			ops[2].Status = OpRejected
			ops[2].Owned = false
		}, func(r *Report) int { return r.FailedButPresent }},
		{"owned stream conflict", func(ops []*Op, logs []NodeLog, _ *observed) {
			ops[0] = &Op{Stream: "s", Owned: true, Expect: 5, IDs: []uuid.UUID{uuid.New()}, Status: OpRejected}
		}, func(r *Report) int { return r.OwnedConflicts }},
		{"unknown record", func(ops []*Op, logs []NodeLog, _ *observed) {
			for i := range logs {
				logs[i].Parts[0] = append(logs[i].Parts[0], wire.ReadEvent{ID: uuid.New(), Stream: "s", Version: 6, Offset: 5})
			}
		}, func(r *Report) int { return r.UnknownRecords }},
		{"partial append", func(ops []*Op, logs []NodeLog, _ *observed) {
			ops[4].IDs = append(ops[4].IDs, uuid.New())
			ops[4].Status = OpUnresolved
		}, func(r *Report) int { return r.PartialAppends }},
		{"unavailable but appended", func(ops []*Op, logs []NodeLog, _ *observed) {
			ops[4].Status = OpUnresolved
			ops[4].Attempts = []Attempt{{Outcome: wire.OutcomeUnavailable}}
		}, func(r *Report) int { return r.UnavailableButAdded }},
		{"dirty partition read", func(ops []*Op, logs []NodeLog, obs *observed) {
			obs.record(wire.ReadEvent{ID: uuid.New(), Stream: "x", Version: 1, Partition: 0, Offset: 1})
		}, func(r *Report) int { return r.DirtyReads }},
		{"dirty stream read", func(ops []*Op, logs []NodeLog, obs *observed) {
			obs.mu.Lock()
			obs.recordVersionLocked(wire.ReadEvent{ID: logs[0].Parts[0][0].ID, Stream: "s", Version: 2})
			obs.mu.Unlock()
		}, func(r *Report) int { return r.DirtyReads }},
		{"stale read after a barrier", func(ops []*Op, logs []NodeLog, obs *observed) {
			// Version 4 was acknowledged at 1003.01 s; a read sent later
			// on another node returns version 2.
			at := time.Unix(1003, 500e6)
			obs.lin.add(LinRead{Stream: "s", Node: 1, Start: at, End: at.Add(5 * time.Millisecond), Version: 2, LastID: ops[1].IDs[0]})
		}, func(r *Report) int { return r.Linearizability.StaleReads }},
		{"read of a version never appended", func(ops []*Op, logs []NodeLog, obs *observed) {
			at := time.Unix(1003, 500e6)
			obs.lin.add(LinRead{Stream: "s", Node: 1, Start: at, End: at.Add(5 * time.Millisecond), Version: 9, LastID: uuid.New()})
		}, func(r *Report) int { return r.Linearizability.NonLinearizable }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ops, logs := history(5)
			obs := newObserved(1)
			tc.mutate(ops, logs, obs)
			r := Check(ops, logs, obs, nil, nil)
			require.NotZero(t, tc.want(r), "report:\n%s", r)
			require.NotEmpty(t, r.Violations())
		})
	}
}

func TestCheckCountsIndeterminate(t *testing.T) {
	ops, logs := history(3)
	ops[0].Attempts = append([]Attempt{{Outcome: wire.OutcomeUnknown}}, ops[0].Attempts...)
	ops[0].Res.Duplicate = true
	ops[1].Attempts = append([]Attempt{{Outcome: outcomeTransport}}, ops[1].Attempts...)
	ops = append(ops, &Op{Stream: "t", IDs: []uuid.UUID{uuid.New()}, Status: OpUnresolved, Attempts: []Attempt{{Outcome: wire.OutcomeUnknown}}})
	r := Check(ops, logs, nil, nil, nil)
	require.Empty(t, r.Violations())
	require.Equal(t, 3, r.IndeterminateOps)
	require.Equal(t, 1, r.IndeterminateThenDuplicate)
	require.Equal(t, 1, r.IndeterminateThenAppended)
	require.Equal(t, 1, r.Unresolved)
	require.Zero(t, r.UnresolvedAppeared)
}

// groupHistory is a clean consumer-group record of history(n)'s log: m1
// granted partition 0 at generation 3, handling every event and
// committing after each, all acknowledged.
func groupHistory(logs []NodeLog) []wire.ConsumerRecord {
	t0 := time.Unix(2000, 0).UnixNano()
	at := func(ms int) int64 { return t0 + int64(ms)*int64(time.Millisecond) }
	recs := []wire.ConsumerRecord{{Kind: wire.RecordGrant, Member: "m1", Partition: 0, Generation: 3, Offset: 0, Start: at(0)}}
	for i, e := range logs[0].Parts[0] {
		recs = append(recs,
			wire.ConsumerRecord{Kind: wire.RecordHandle, Member: "m1", Partition: 0, Generation: 3, Offset: e.Offset, ID: e.ID, Start: at(10*i + 1)},
			wire.ConsumerRecord{Kind: wire.RecordCommit, Member: "m1", Partition: 0, Generation: 3, Offset: e.Offset + 1, Start: at(10*i + 2), End: at(10*i + 5), Outcome: wire.CommitAcked})
	}
	return recs
}

func TestCheckGroupClean(t *testing.T) {
	_, logs := history(5)
	g := checkGroup(groupHistory(logs), logs[0], []uint64{5}, nil)
	require.Zero(t, g.NeverHandled)
	require.Zero(t, g.StaleAccepted)
	require.Zero(t, g.HandledNotInLog)
	require.Zero(t, g.Lag)
	require.Equal(t, 5, g.Handled)
	require.Equal(t, 5, g.CommitsAcked)
	require.Equal(t, 1, g.Grants)
}

// TestCheckGroupFindsViolations breaks a clean consumer-group history in
// one way at a time and expects the check to name it; the cases marked
// clean are allowed behaviour the check must not count.
func TestCheckGroupFindsViolations(t *testing.T) {
	t0 := time.Unix(2000, 0).UnixNano()
	at := func(ms int) int64 { return t0 + int64(ms)*int64(time.Millisecond) }
	cases := []struct {
		name      string
		mutate    func(recs []wire.ConsumerRecord, logs []NodeLog) ([]wire.ConsumerRecord, []uint64)
		want      func(g *GroupReport) int
		violation bool
	}{
		{"never handled", func(recs []wire.ConsumerRecord, logs []NodeLog) ([]wire.ConsumerRecord, []uint64) {
			// Drop the handling of offset 2 (records: grant, then handle/commit pairs).
			return append(recs[:5:5], recs[6:]...), []uint64{5}
		}, func(g *GroupReport) int { return g.NeverHandled }, true},
		{"not handled but above the committed offset", func(recs []wire.ConsumerRecord, logs []NodeLog) ([]wire.ConsumerRecord, []uint64) {
			// The last event was never handled, nor committed: lag, not a
			// lost handling.
			return recs[:9], []uint64{4}
		}, func(g *GroupReport) int { return int(g.Lag) }, true},
		{"handled an event the log does not hold there", func(recs []wire.ConsumerRecord, logs []NodeLog) ([]wire.ConsumerRecord, []uint64) {
			return append(recs, wire.ConsumerRecord{Kind: wire.RecordHandle, Member: "m2", Partition: 0, Offset: 1, ID: uuid.New(), Start: at(100)}), []uint64{5}
		}, func(g *GroupReport) int { return g.HandledNotInLog }, true},
		{"stale commit acknowledged after a newer grant", func(recs []wire.ConsumerRecord, logs []NodeLog) ([]wire.ConsumerRecord, []uint64) {
			return append(recs,
				wire.ConsumerRecord{Kind: wire.RecordGrant, Member: "m2", Partition: 0, Generation: 5, Offset: 5, Start: at(100)},
				wire.ConsumerRecord{Kind: wire.RecordCommit, Member: "m1", Partition: 0, Generation: 3, Offset: 5, Start: at(101), End: at(105), Outcome: wire.CommitAcked},
			), []uint64{5}
		}, func(g *GroupReport) int { return g.StaleAccepted }, true},
		{"stale commit acknowledged after a newer generation's, rewinding", func(recs []wire.ConsumerRecord, logs []NodeLog) ([]wire.ConsumerRecord, []uint64) {
			// No grant record of generation 5 (its member's record lost),
			// but its acknowledged commit shows the grant had applied.
			return append(recs,
				wire.ConsumerRecord{Kind: wire.RecordCommit, Member: "m2", Partition: 0, Generation: 5, Offset: 5, Start: at(100), End: at(102), Outcome: wire.CommitAcked},
				wire.ConsumerRecord{Kind: wire.RecordCommit, Member: "m1", Partition: 0, Generation: 3, Offset: 4, Start: at(103), End: at(105), Outcome: wire.CommitAcked},
			), []uint64{5}
		}, func(g *GroupReport) int { return g.StaleRewinding }, true},
		{"clean: stale commit rejected", func(recs []wire.ConsumerRecord, logs []NodeLog) ([]wire.ConsumerRecord, []uint64) {
			return append(recs,
				wire.ConsumerRecord{Kind: wire.RecordGrant, Member: "m2", Partition: 0, Generation: 5, Offset: 5, Start: at(100)},
				wire.ConsumerRecord{Kind: wire.RecordCommit, Member: "m1", Partition: 0, Generation: 3, Offset: 5, Start: at(101), End: at(105), Outcome: wire.CommitStale},
			), []uint64{5}
		}, func(g *GroupReport) int { return g.CommitsStale }, false},
		{"clean: old commit sent before the newer grant applied", func(recs []wire.ConsumerRecord, logs []NodeLog) ([]wire.ConsumerRecord, []uint64) {
			// Sent before the grant was seen: it may have applied first.
			return append(recs,
				wire.ConsumerRecord{Kind: wire.RecordCommit, Member: "m1", Partition: 0, Generation: 3, Offset: 5, Start: at(99), End: at(105), Outcome: wire.CommitAcked},
				wire.ConsumerRecord{Kind: wire.RecordGrant, Member: "m2", Partition: 0, Generation: 5, Offset: 5, Start: at(100)},
			), []uint64{5}
		}, func(g *GroupReport) int { return g.CommitsAcked - 5 }, false},
		{"clean: redelivered", func(recs []wire.ConsumerRecord, logs []NodeLog) ([]wire.ConsumerRecord, []uint64) {
			e := logs[0].Parts[0][3]
			return append(recs, wire.ConsumerRecord{Kind: wire.RecordHandle, Member: "m2", Partition: 0, Generation: 5, Offset: e.Offset, ID: e.ID, Start: at(100)}), []uint64{5}
		}, func(g *GroupReport) int { return g.Redelivered }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, logs := history(5)
			recs, committed := tc.mutate(groupHistory(logs), logs)
			g := checkGroup(recs, logs[0], committed, nil)
			require.Equal(t, 1, tc.want(g), "report:\n%s", g)
			r := &Report{EventsNeverHandled: &g.NeverHandled, StaleCommitsAccepted: &g.StaleAccepted, Group: g}
			if tc.violation {
				require.NotEmpty(t, r.Violations(), "report:\n%s", g)
			} else {
				require.Empty(t, r.Violations(), "report:\n%s", g)
			}
		})
	}
}

// TestLinearizabilityAcceptsConcurrentReads feeds the checker histories
// that are linearizable although reads return different versions: a read
// concurrent with an append may see it or not, and an append whose outcome
// stayed unknown counts from its call on if the final log holds it.
func TestLinearizabilityAcceptsConcurrentReads(t *testing.T) {
	ops, logs := history(5)
	obs := newObserved(1)
	read := func(startMS, endMS int64, v uint64) {
		obs.lin.add(LinRead{Stream: "s", Start: time.UnixMilli(startMS), End: time.UnixMilli(endMS), Version: v, LastID: ops[v-1].IDs[0]})
	}
	// op 2 (version 3) runs from 1002.000 to 1002.010 s.
	read(1001500, 1002005, 2) // concurrent with it: before
	read(1002001, 1002003, 3) // concurrent with it: after
	read(1002020, 1002030, 3) // after it
	// op 4's answer was lost: the final log holds it, so it may take
	// effect any time after its call.
	ops[4].Status = OpUnresolved
	ops[4].Attempts[0].Outcome = outcomeTransport
	read(1004500, 1004510, 4)
	read(1005500, 1005510, 5)
	r := Check(ops, logs, obs, nil, nil)
	require.Equal(t, LinReport{Reads: 5, Streams: 1}, r.Linearizability)
	require.Empty(t, r.Violations())

	// The same reads in another order are not: version 3 seen, then 2.
	read(1002040, 1002050, 2)
	r = Check(ops, logs, obs, nil, nil)
	require.Equal(t, 1, r.Linearizability.StaleReads)
	require.Equal(t, 1, r.Linearizability.NonLinearizable)
	require.Contains(t, r.Violations(), "stale-reads=1")
}

// TestCheckLeavesOutDetectedDamage: a partition a node refused to read as
// corrupt is counted as detected damage, and only that node's copy of it
// is left out of the checks; the same loss on a node that served the
// partition is a loss.
func TestCheckLeavesOutDetectedDamage(t *testing.T) {
	ops, logs := history(5)
	logs[2].Parts[0] = logs[2].Parts[0][:2]
	logs[2].Damaged = map[int]string{0: "raftlog: partition 0 offset 2: raftlog: corrupt data"}
	logs[2].Digests[0] = "damaged"
	r := Check(ops, logs, nil, nil, nil)
	require.Equal(t, 1, r.CorruptionDetected)
	require.Empty(t, r.Violations(), "report:\n%s", r)

	logs[2].Damaged = nil
	r = Check(ops, logs, nil, nil, nil)
	require.Equal(t, 3, r.LostAcked, "report:\n%s", r)
}

// The workload's event IDs: about half the appends carry a run of
// consecutive IDs, the others independent ones; all are distinct.
func TestEventIDsMakeRuns(t *testing.T) {
	seen := map[uuid.UUID]bool{}
	runs := 0
	for range 400 {
		ids := eventIDs(3)
		require.Len(t, ids, 3)
		consecutive := true
		for i, id := range ids {
			require.False(t, seen[id])
			seen[id] = true
			if i > 0 && binary.BigEndian.Uint64(id[8:]) != binary.BigEndian.Uint64(ids[0][8:])+uint64(i) {
				consecutive = false
			}
			if i > 0 && !bytes.Equal(id[:8], ids[0][:8]) {
				consecutive = false
			}
		}
		if consecutive {
			runs++
		}
	}
	require.InDelta(t, 200, runs, 60, "runs in 400 appends")
}
