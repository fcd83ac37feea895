package faulttest

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/esraft/esraft/systemtest/faulttest/wire"
)

// NodeLog is everything one node holds after the run, read once the
// cluster is healed and every node has applied a final barrier append.
type NodeLog struct {
	Node    int
	Heads   []uint64           // next offset per partition
	Parts   [][]wire.ReadEvent // per partition, in read order
	Digests []string           // per partition, SHA-256 of every field up to the common head
	// Damaged holds the partitions the node refused to read as corrupt
	// (the error it gave): detected damage, never served. Parts holds
	// what it read before; the checks of the node against the history
	// and the other replicas skip those partitions.
	Damaged map[int]string
}

// Report holds a run's figures. The fields under "must be zero" are the
// safety properties; the suite fails if any is not.
type Report struct {
	Seed     uint64
	Duration time.Duration
	Faults   int
	ByKind   map[string]int
	// From the nodes' raft logs: leaders elected, and followers that
	// caught up from a full state copy (InstallSnapshot).
	LeaderElections, SnapshotInstalls int
	// FaultErrors counts faults the nemesis could not inject or after
	// which the cluster did not recover within the deadline.
	FaultErrors int
	// DiskOutcomes counts disk faults by kind and how the node took them
	// (Fault.Outcome without its details).
	DiskOutcomes map[string]int
	// Must be zero: damaged nodes that crashed (a panic, a signal) instead
	// of refusing to start with an error, and full disks on which the
	// running node did not serve reads (one that exited is an unexpected
	// exit).
	DamagedCrashes, FullDiskReadFailures int

	// Workload.
	Ops, Acked, AckedEvents, Rejected int
	IndeterminateAttempts             int
	// Ops with at least one indeterminate attempt, and how they ended:
	// a later attempt found them already appended (Duplicate), a later
	// attempt appended them, or a later attempt found the version moved.
	IndeterminateOps, IndeterminateThenDuplicate, IndeterminateThenAppended, IndeterminateThenRejected int
	// Unresolved ops (still being retried when the run ended) and how many
	// of them are in the final log.
	Unresolved, UnresolvedAppeared int
	// DuplicateOnFirstAttempt counts appends acknowledged with Duplicate
	// set although the client sent them once: the node retried them
	// internally after an unknown outcome (raftlog's submit loop).
	DuplicateOnFirstAttempt      int
	PartitionReads, FinalRecords int

	// Must be zero. Figures about one node's log are summed over nodes.
	LostAcked           int // acknowledged appends missing from some node's final log
	Duplicates          int // an event ID at two offsets of one node's log
	AckMismatch         int // an acknowledged append found elsewhere than its result said
	ExpectViolated      int // an exact-version append acknowledged at another version
	FailedButPresent    int // an append rejected with a definite error that is in the log
	UnavailableButAdded int // an unresolved append whose every attempt said "nothing appended", in the log
	PartialAppends      int // an append whose events are not all present and contiguous
	UnknownRecords      int // records no client appended
	OwnedConflicts      int // a wrong version on a stream only one worker appends to
	IDConflicts         int
	OffsetGaps          int // offsets not dense from 0 in some node's partition
	OffsetReorders      int // offsets not increasing in read order
	VersionGaps         int // stream versions not dense from 1 in offset order
	DivergentPartitions int // partitions whose digests differ between nodes
	DivergentOffsets    int // offsets holding different events on different nodes
	HeadsDiffer         int // partitions whose heads differ after the barrier
	DirtyReads          int // a read saw an event the final log does not hold there
	// ApplyDigests compares what the nodes decided for each window of
	// raft indexes (digests.go): Differ must be zero.
	ApplyDigests ApplyDigests
	// CorruptionDetected counts partitions a node refused to read as
	// corrupt after the run (a disk fault it detected; not served).
	CorruptionDetected int
	// Linearizability of appends and reads after a read barrier on any
	// node (porcupine, linear.go): stale reads and non-linearizable
	// streams must be zero.
	Linearizability LinReport
	ReaderAnomalies map[string]int
	AnomalyNotes    map[string][]string

	// Time from a fault to the first acknowledged append sent after it, by
	// fault kind; for a fault aimed at one group's leader, the first such
	// append to that group.
	Resume map[string]Dist
	// Unresumed counts faults after which no append sent later was
	// acknowledged before the run ended.
	Unresumed int

	// Consumer-group figures, nil when the run has no consumer group
	// (Config.ConsumerGroup; see consumer.go). Both must be zero.
	EventsNeverHandled   *int
	StaleCommitsAccepted *int
	Group                *GroupReport
}

// Dist summarizes durations.
type Dist struct {
	N             int
	P50, P99, Max time.Duration
}

func dist(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	slices.Sort(ds)
	q := func(f float64) time.Duration {
		i := int(math.Ceil(f*float64(len(ds)))) - 1
		return ds[max(0, min(i, len(ds)-1))]
	}
	return Dist{N: len(ds), P50: q(0.50), P99: q(0.99), Max: ds[len(ds)-1]}
}

func (d Dist) String() string {
	if d.N == 0 {
		return "n=0"
	}
	r := func(x time.Duration) time.Duration { return x.Round(time.Millisecond) }
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", d.N, r(d.P50), r(d.P99), r(d.Max))
}

// Violations lists every safety figure that is not zero.
func (r *Report) Violations() []string {
	var v []string
	add := func(name string, n int) {
		if n != 0 {
			v = append(v, fmt.Sprintf("%s=%d", name, n))
		}
	}
	add("lost-acknowledged", r.LostAcked)
	add("duplicates", r.Duplicates)
	add("ack-mismatch", r.AckMismatch)
	add("expect-violated", r.ExpectViolated)
	add("failed-but-present", r.FailedButPresent)
	add("unavailable-but-appended", r.UnavailableButAdded)
	add("partial-appends", r.PartialAppends)
	add("unknown-records", r.UnknownRecords)
	add("owned-stream-conflicts", r.OwnedConflicts)
	add("id-conflicts", r.IDConflicts)
	add("offset-gaps", r.OffsetGaps)
	add("offset-reorders", r.OffsetReorders)
	add("version-gaps", r.VersionGaps)
	add("divergent-partitions", r.DivergentPartitions)
	add("divergent-offsets", r.DivergentOffsets)
	add("heads-differ", r.HeadsDiffer)
	add("dirty-reads", r.DirtyReads)
	add("apply-digests-differ", r.ApplyDigests.Differ)
	add("damaged-node-crashed", r.DamagedCrashes)
	add("full-disk-reads-failed", r.FullDiskReadFailures)
	add("stale-reads", r.Linearizability.StaleReads)
	add("non-linearizable-streams", r.Linearizability.NonLinearizable)
	if r.EventsNeverHandled != nil {
		add("events-never-handled", *r.EventsNeverHandled)
	}
	if r.StaleCommitsAccepted != nil {
		add("stale-commits-accepted", *r.StaleCommitsAccepted)
	}
	if g := r.Group; g != nil {
		add("consumer-handled-not-in-log", g.HandledNotInLog)
		add("consumer-lag", int(g.Lag))
	}
	kinds := make([]string, 0, len(r.ReaderAnomalies))
	for k := range r.ReaderAnomalies {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		if k != anReadOwnWriteDeadline {
			add(k, r.ReaderAnomalies[k])
		}
	}
	return v
}

// String renders the report as the table RELIABILITY.md records.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %v, %d faults", r.Seed, r.Duration.Round(time.Second), r.Faults)
	kinds := make([]string, 0, len(r.ByKind))
	for k := range r.ByKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var ks []string
	for _, k := range kinds {
		ks = append(ks, fmt.Sprintf("%s %d", k, r.ByKind[k]))
	}
	fmt.Fprintf(&b, " (%s), fault errors %d\n", strings.Join(ks, ", "), r.FaultErrors)
	if len(r.DiskOutcomes) > 0 {
		var ds []string
		for _, k := range sortedKeys(r.DiskOutcomes) {
			ds = append(ds, fmt.Sprintf("%s %d", k, r.DiskOutcomes[k]))
		}
		fmt.Fprintf(&b, "disk faults: %s; damaged nodes that crashed %d, full disks without reads %d\n",
			strings.Join(ds, ", "), r.DamagedCrashes, r.FullDiskReadFailures)
	}
	fmt.Fprintf(&b, "raft: %d leader elections, %d snapshot installs on followers\n", r.LeaderElections, r.SnapshotInstalls)
	fmt.Fprintf(&b, "appends: %d ops, %d acknowledged (%d events), %d rejected (wrong version)\n", r.Ops, r.Acked, r.AckedEvents, r.Rejected)
	fmt.Fprintf(&b, "indeterminate: %d attempts in %d ops; then duplicate %d, appended by a retry %d, rejected %d; unresolved at end %d, of which in the log %d; acknowledged as duplicate on the first attempt %d\n",
		r.IndeterminateAttempts, r.IndeterminateOps, r.IndeterminateThenDuplicate, r.IndeterminateThenAppended,
		r.IndeterminateThenRejected, r.Unresolved, r.UnresolvedAppeared, r.DuplicateOnFirstAttempt)
	fmt.Fprintf(&b, "reads: %d partition offsets observed by readers; %d records in the final log\n", r.PartitionReads, r.FinalRecords)
	fmt.Fprintf(&b, "lost acknowledged %d, duplicates %d, ack mismatch %d, expected version violated %d, failed but present %d, unavailable but appended %d, partial appends %d, unknown records %d\n",
		r.LostAcked, r.Duplicates, r.AckMismatch, r.ExpectViolated, r.FailedButPresent, r.UnavailableButAdded, r.PartialAppends, r.UnknownRecords)
	fmt.Fprintf(&b, "owned-stream conflicts %d, id conflicts %d, offset gaps %d, offset reorders %d, version gaps %d\n",
		r.OwnedConflicts, r.IDConflicts, r.OffsetGaps, r.OffsetReorders, r.VersionGaps)
	fmt.Fprintf(&b, "divergence: partitions %d, offsets %d, heads differ %d; dirty reads %d\n",
		r.DivergentPartitions, r.DivergentOffsets, r.HeadsDiffer, r.DirtyReads)
	fmt.Fprintf(&b, "apply digests: %d windows logged by two nodes or more, %d differ\n", r.ApplyDigests.Windows, r.ApplyDigests.Differ)
	for _, w := range r.ApplyDigests.First {
		fmt.Fprintf(&b, "  apply digests differ: %s\n", w)
	}
	if r.CorruptionDetected > 0 {
		fmt.Fprintf(&b, "damage detected: %d partitions refused as corrupt by their node after the run (left out of the checks above)\n", r.CorruptionDetected)
	}
	l := r.Linearizability
	fmt.Fprintf(&b, "linearizability (porcupine): %d reads after a read barrier on %d streams; stale reads %d, non-linearizable streams %d, undecided streams %d\n",
		l.Reads, l.Streams, l.StaleReads, l.NonLinearizable, l.Unknown)
	for _, n := range l.Notes {
		fmt.Fprintf(&b, "  linearizability: %s\n", n)
	}
	var an []string
	for _, k := range sortedKeys(r.ReaderAnomalies) {
		an = append(an, fmt.Sprintf("%s %d", k, r.ReaderAnomalies[k]))
	}
	if len(an) == 0 {
		an = []string{"none"}
	}
	fmt.Fprintf(&b, "reader/monitor anomalies: %s\n", strings.Join(an, ", "))
	for _, k := range sortedKeys(r.AnomalyNotes) {
		for _, n := range r.AnomalyNotes[k] {
			fmt.Fprintf(&b, "  %s: %s\n", k, n)
		}
	}
	fmt.Fprintf(&b, "time from fault to first acknowledged append sent after it (unresumed %d):\n", r.Unresumed)
	for _, k := range sortedKeys(r.Resume) {
		fmt.Fprintf(&b, "  %-20s %s\n", k, r.Resume[k])
	}
	never := "not measured (no consumer group in this run, see consumer.go)"
	if r.EventsNeverHandled != nil {
		never = fmt.Sprint(*r.EventsNeverHandled)
	}
	stale := never
	if r.StaleCommitsAccepted != nil {
		stale = fmt.Sprint(*r.StaleCommitsAccepted)
	}
	fmt.Fprintf(&b, "consumer group: events never handled %s; stale-generation commits accepted %s\n", never, stale)
	if r.Group != nil {
		b.WriteString(r.Group.String())
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

type loc struct {
	p       int
	offset  uint64
	stream  string
	version uint64
}

// indexLog checks one node's log on its own (dense offsets, dense stream
// versions, no ID twice) and indexes it by event ID.
func indexLog(nl NodeLog, r *Report, notes func(kind, format string, args ...any)) map[uuid.UUID]loc {
	idx := make(map[uuid.UUID]loc)
	versions := map[string]uint64{}
	for p, evs := range nl.Parts {
		for i, e := range evs {
			if i > 0 && e.Offset <= evs[i-1].Offset {
				r.OffsetReorders++
				notes("offset-reorder", "n%d p%d: offset %d after %d", nl.Node+1, p, e.Offset, evs[i-1].Offset)
			} else if e.Offset != uint64(i) {
				r.OffsetGaps++
				notes("offset-gap", "n%d p%d: offset %d at position %d", nl.Node+1, p, e.Offset, i)
			}
			if prev := versions[e.Stream]; e.Version != prev+1 {
				r.VersionGaps++
				notes("version-gap", "n%d %s: version %d after %d (p%d offset %d)", nl.Node+1, e.Stream, e.Version, prev, p, e.Offset)
			}
			versions[e.Stream] = e.Version
			if was, dup := idx[e.ID]; dup {
				r.Duplicates++
				notes("duplicate", "n%d: %s at p%d offset %d and p%d offset %d", nl.Node+1, e.ID, was.p, was.offset, p, e.Offset)
				continue
			}
			idx[e.ID] = loc{p: p, offset: e.Offset, stream: e.Stream, version: e.Version}
		}
	}
	return idx
}

// Check computes a report from the history, the final logs of every node,
// what the readers observed, and the faults injected.
func Check(ops []*Op, logs []NodeLog, obs *observed, an *Anomalies, faults []Fault) *Report {
	r := &Report{ByKind: map[string]int{}, ReaderAnomalies: map[string]int{}, AnomalyNotes: map[string][]string{}, Resume: map[string]Dist{}}
	notes := func(kind, format string, args ...any) {
		if len(r.AnomalyNotes[kind]) < 5 {
			r.AnomalyNotes[kind] = append(r.AnomalyNotes[kind], fmt.Sprintf(format, args...))
		}
	}
	// Each node's log on its own; per-node figures are summed over nodes.
	var idxs []map[uuid.UUID]loc
	for _, nl := range logs {
		idxs = append(idxs, indexLog(nl, r, notes))
	}
	if len(logs) == 0 {
		return r
	}
	ref := logs[0]
	for _, evs := range ref.Parts {
		r.FinalRecords += len(evs)
	}
	for _, nl := range logs {
		for _, p := range slices.Sorted(maps.Keys(nl.Damaged)) {
			r.CorruptionDetected++
			notes("corruption-detected", "n%d p%d: %s", nl.Node+1, p, nl.Damaged[p])
		}
	}
	// Replicas against each other.
	for p := range ref.Parts {
		divergent := false
		for _, nl := range logs[1:] {
			if damaged(ref, p) || damaged(nl, p) {
				continue
			}
			if nl.Heads[p] != ref.Heads[p] {
				r.HeadsDiffer++
				notes("heads-differ", "p%d: n%d head %d, n%d head %d", p, ref.Node+1, ref.Heads[p], nl.Node+1, nl.Heads[p])
			}
			if nl.Digests[p] != ref.Digests[p] {
				divergent = true
				notes("digest", "p%d: n%d %.12s, n%d %.12s", p, ref.Node+1, ref.Digests[p], nl.Node+1, nl.Digests[p])
			}
			a, b := ref.Parts[p], nl.Parts[p]
			for i := range max(len(a), len(b)) {
				if i >= len(a) || i >= len(b) || a[i] != b[i] {
					r.DivergentOffsets++
					if i < len(a) && i < len(b) {
						notes("divergent-offset", "p%d position %d: n%d %+v, n%d %+v", p, i, ref.Node+1, a[i], nl.Node+1, b[i])
					}
				}
			}
		}
		if divergent {
			r.DivergentPartitions++
		}
	}
	// The history against every node's log.
	known := make(map[uuid.UUID]struct{})
	for _, op := range ops {
		r.Ops++
		for _, id := range op.IDs {
			known[id] = struct{}{}
		}
		indet := false
		for _, a := range op.Attempts {
			if indeterminate(a.Outcome) {
				r.IndeterminateAttempts++
				indet = true
			}
		}
		if indet {
			r.IndeterminateOps++
			switch {
			case op.Status == OpAcked && op.Res.Duplicate:
				r.IndeterminateThenDuplicate++
			case op.Status == OpAcked:
				r.IndeterminateThenAppended++
			case op.Status == OpRejected:
				r.IndeterminateThenRejected++
			}
		}
		switch op.Status {
		case OpAcked:
			r.Acked++
			r.AckedEvents += len(op.IDs)
			if op.Expect >= 0 && op.Res.FirstVersion != uint64(op.Expect)+1 {
				r.ExpectViolated++
				notes("expect-violated", "%s expected %d, acknowledged at version %d", op.Stream, op.Expect, op.Res.FirstVersion)
			}
		case OpRejected:
			r.Rejected++
			if op.Owned {
				r.OwnedConflicts++
				notes("owned-conflict", "%s expected %d, actual %d; attempts %+v", op.Stream, op.Expect, op.Res.Actual, op.Attempts)
			}
		case OpFailed:
			r.IDConflicts++
			notes("id-conflict", "%s %v: %s", op.Stream, op.IDs, op.Res.Message)
		case OpUnresolved:
			r.Unresolved++
		}
		appeared := false
		for ni, idx := range idxs {
			if damaged(logs[ni], partitionOf(op.Stream, len(logs[ni].Parts))) {
				continue
			}
			present := 0
			for _, id := range op.IDs {
				if _, ok := idx[id]; ok {
					present++
				}
			}
			if present > 0 && !contiguous(op, idx) {
				r.PartialAppends++
				notes("partial-append", "n%d %s: %d of %d events present or not contiguous", logs[ni].Node+1, op.Stream, present, len(op.IDs))
			}
			switch op.Status {
			case OpAcked:
				if present < len(op.IDs) {
					r.LostAcked++
					notes("lost", "n%d: %s %v acknowledged at p%d offset %d version %d", logs[ni].Node+1, op.Stream, op.IDs, op.Res.Partition, op.Res.FirstOffset, op.Res.FirstVersion)
					continue
				}
				first := idx[op.IDs[0]]
				if first.p != op.Res.Partition || first.offset != op.Res.FirstOffset || first.version != op.Res.FirstVersion || first.stream != op.Stream {
					r.AckMismatch++
					notes("ack-mismatch", "n%d: %s acknowledged at p%d offset %d version %d, found %+v", logs[ni].Node+1, op.Stream, op.Res.Partition, op.Res.FirstOffset, op.Res.FirstVersion, first)
				}
			case OpRejected, OpFailed:
				if present > 0 {
					r.FailedButPresent++
					notes("failed-but-present", "n%d: %s %v (status %d)", logs[ni].Node+1, op.Stream, op.IDs, op.Status)
				}
			}
			if ni == 0 && present == len(op.IDs) {
				appeared = true
			}
		}
		if op.Status == OpUnresolved && appeared {
			r.UnresolvedAppeared++
			if !indet {
				r.UnavailableButAdded++
				notes("unavailable-but-appended", "%s %v: attempts %+v", op.Stream, op.IDs, op.Attempts)
			}
		}
		if op.Status == OpAcked && op.Res.Duplicate && len(op.Attempts) == 1 {
			r.DuplicateOnFirstAttempt++
		}
	}
	for ni, idx := range idxs {
		for id, l := range idx {
			if _, ok := known[id]; !ok {
				r.UnknownRecords++
				notes("unknown-record", "n%d: %s at p%d offset %d (%s v%d)", logs[ni].Node+1, id, l.p, l.offset, l.stream, l.version)
			}
		}
	}
	// What readers saw against the final log.
	if obs != nil {
		obs.mu.Lock()
		for p, ids := range obs.parts {
			for off, id := range ids {
				if !obs.seen[p][off] {
					continue
				}
				r.PartitionReads++
				if off >= len(ref.Parts[p]) || ref.Parts[p][off].ID != id {
					r.DirtyReads++
					notes("dirty-read", "p%d offset %d read as %s", p, off, id)
				}
			}
		}
		refIdx := idxs[0]
		for s, ids := range obs.streams {
			for v, id := range ids {
				if id == uuid.Nil {
					continue
				}
				if l, ok := refIdx[id]; !ok || l.stream != s || l.version != uint64(v+1) {
					r.DirtyReads++
					notes("dirty-read", "%s version %d read as %s, final log has %+v", s, v+1, id, l)
				}
			}
		}
		obs.mu.Unlock()
		r.Linearizability = checkLinearizable(ops, obs.lin.all(), refIdx)
	}
	if an != nil {
		an.mu.Lock()
		for k, n := range an.counts {
			r.ReaderAnomalies[k] = n
			r.AnomalyNotes[k] = append(r.AnomalyNotes[k], an.notes[k]...)
		}
		an.mu.Unlock()
	}
	// Faults and time to resumed writes.
	r.Faults = len(faults)
	type okAttempt struct {
		start, end time.Time
		group      int
	}
	var oks []okAttempt
	for _, op := range ops {
		for _, a := range op.Attempts {
			if a.Outcome == wire.OutcomeOK {
				oks = append(oks, okAttempt{a.Start, a.End, op.Res.Group})
			}
		}
	}
	sort.Slice(oks, func(i, j int) bool { return oks[i].start.Before(oks[j].start) })
	byKind := map[string][]time.Duration{}
	for _, f := range faults {
		r.ByKind[f.Kind]++
		if f.Err != "" {
			r.FaultErrors++
		}
		r.countDiskOutcome(f)
		best := time.Duration(-1)
		for _, a := range oks[sort.Search(len(oks), func(i int) bool { return !oks[i].start.Before(f.Start) }):] {
			if best >= 0 && a.start.Sub(f.Start) >= best {
				break // later sends cannot finish sooner than best
			}
			if f.Group >= 0 && a.group != f.Group {
				continue // a leader fault: writes to the group it hit
			}
			if d := a.end.Sub(f.Start); best < 0 || d < best {
				best = d
			}
		}
		if best < 0 {
			r.Unresumed++
			continue
		}
		byKind[f.Kind] = append(byKind[f.Kind], best)
		byKind["all"] = append(byKind["all"], best)
	}
	for k, ds := range byKind {
		r.Resume[k] = dist(ds)
	}
	return r
}

// countDiskOutcome adds a disk fault's outcome to the report.
func (r *Report) countDiskOutcome(f Fault) {
	switch f.Kind {
	case FaultCorruptLogOld, FaultCorruptLogNew, FaultCorruptState, FaultTruncateLog, FaultTruncateState:
		outcome, _, _ := strings.Cut(f.Outcome, ":")
		if r.DiskOutcomes == nil {
			r.DiskOutcomes = map[string]int{}
		}
		r.DiskOutcomes[f.Kind+" "+outcome]++
		if strings.HasPrefix(f.Outcome, "crashed") {
			r.DamagedCrashes++
		}
	case FaultFillDisk:
		if strings.Contains(f.Outcome, "reads on the full disk failed") {
			r.FullDiskReadFailures++
		}
		if strings.Contains(f.Outcome, "crashed") {
			r.DamagedCrashes++
		}
	}
}

// damaged reports whether nl's node refused to read partition p.
func damaged(nl NodeLog, p int) bool {
	_, ok := nl.Damaged[p]
	return ok
}

// contiguous reports whether every event of op is in idx, at consecutive
// offsets of one partition and consecutive versions of op's stream.
func contiguous(op *Op, idx map[uuid.UUID]loc) bool {
	first, ok := idx[op.IDs[0]]
	if !ok || first.stream != op.Stream {
		return false
	}
	for i, id := range op.IDs {
		l, ok := idx[id]
		if !ok || l.p != first.p || l.stream != op.Stream ||
			l.offset != first.offset+uint64(i) || l.version != first.version+uint64(i) {
			return false
		}
	}
	return true
}
