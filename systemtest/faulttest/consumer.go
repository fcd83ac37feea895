package faulttest

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/esraft/esraft/systemtest/faulttest/wire"
)

// ConsumerGroupWorkload is the consumer-group part of issue #8: every node
// process runs a member of one consumer group (projection.Group, member
// ID the node ID, started with the node and restarted with it) under the
// same nemesis as the appenders. Each member's handler records every
// event it handles (partition, offset, event ID, member, grant generation)
// before the runner commits the batch's offsets, and the runner's observer
// hooks record every partition granted (with its generation, once the
// grant has applied) and every commit attempt (generation carried, start
// and end, outcome); all of it goes, one O_APPEND write per record, to a
// file in the node's data directory, so it survives SIGKILL (see
// systemtest/faultnode).
//
// After the final barrier, the harness waits (polling the nodes' /group,
// with a deadline) until the group has committed up to the end of every
// partition, then reads the record files and sets, against the final log:
//
//   - Report.EventsNeverHandled: events below the group's committed
//     offset of their partition that no member handled (at-least-once
//     broken);
//   - Report.StaleCommitsAccepted: commits acknowledged although their
//     request started after a newer grant of the partition had applied
//     (a member was seen granted it at a higher generation, or a commit
//     carrying a higher generation had been acknowledged): fencing must
//     have rejected them;
//   - Report.Group: the rest (handlings, redeliveries, commits
//     acknowledged and rejected as stale, events handled that the final
//     log does not hold there, the lag left at the deadline).
//
// Report.Violations fails the run on any of those that is not zero.
type ConsumerGroupWorkload struct {
	// SessionTimeout of every member. Pauses of the nemesis (2.5-5 s)
	// longer than it make zombies: members whose partitions were given
	// to others while they were stopped, and whose commits must then be
	// rejected.
	SessionTimeout time.Duration
	// CatchUp bounds the wait, after the final barrier, for the group to
	// commit up to the end of every partition (default one minute).
	CatchUp time.Duration
}

// GroupReport is what the consumer-group check found.
type GroupReport struct {
	Handlings   int // handler calls recorded
	Handled     int // distinct events handled
	Redelivered int // handlings beyond an event's first (at-least-once redeliveries, allowed)
	Grants      int
	// Commit attempts by outcome: acknowledged, rejected as stale, and
	// failed otherwise (outcome unknown, log closed).
	CommitsAcked, CommitsStale, CommitsFailed int
	// CaughtUp is the time from the final read of the logs (after the
	// barrier) until the group had committed every partition to its end
	// (zero if it never did).
	CaughtUp time.Duration
	// BadLines counts record lines that did not parse (a record cut by a
	// kill, say): left out, not counted as anything.
	BadLines int

	// Must be zero.
	NeverHandled    int    // events below the committed offset no member handled
	Parked          int    // events below the committed offset parked, never handled successfully
	StaleAccepted   int    // acknowledged commits a newer, applied grant should have fenced off
	StaleRewinding  int    // of StaleAccepted, those below an offset acknowledged at a newer generation
	HandledNotInLog int    // handlings of an event the final log does not hold at that offset
	Lag             uint64 // events left to commit when the catch-up deadline passed

	Notes []string
}

func (g *GroupReport) note(format string, args ...any) {
	if len(g.Notes) < 10 {
		g.Notes = append(g.Notes, fmt.Sprintf(format, args...))
	}
}

func (g *GroupReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "consumer group: %d events handled (%d handlings, %d redelivered), %d grants; commits acknowledged %d, rejected as stale %d, failed otherwise %d\n",
		g.Handled, g.Handlings, g.Redelivered, g.Grants, g.CommitsAcked, g.CommitsStale, g.CommitsFailed)
	caught := "never"
	if g.CaughtUp > 0 {
		caught = g.CaughtUp.Round(time.Millisecond).String() + " after the final read"
	}
	fmt.Fprintf(&b, "consumer group: parked (dead-lettered) %d\n", g.Parked)
	fmt.Fprintf(&b, "consumer group: committed to the end %s, lag left %d; stale commits accepted below a newer generation's offset %d; handled but not in the final log %d; unparsable record lines %d\n",
		caught, g.Lag, g.StaleRewinding, g.HandledNotInLog, g.BadLines)
	for _, n := range g.Notes {
		fmt.Fprintf(&b, "  consumer-group: %s\n", n)
	}
	return b.String()
}

// finish waits for the group to catch up with the final log, reads what
// the members recorded and checks it into r.
func (w *ConsumerGroupWorkload) finish(ctx context.Context, c *Cluster, cl *client, logs []NodeLog, r *Report) error {
	if len(logs) == 0 {
		return fmt.Errorf("consumer group: no final log")
	}
	committed, parked, took := w.await(ctx, c, cl, logs[0].Heads)
	var recs []wire.ConsumerRecord
	bad := 0
	for i := range c.Size() {
		rs, b, err := readConsumerRecords(c.consumerRecords(i))
		if err != nil {
			return fmt.Errorf("consumer group: %w", err)
		}
		recs = append(recs, rs...)
		bad += b
	}
	g := checkGroup(recs, logs[0], committed, parked)
	g.CaughtUp, g.BadLines = took, bad
	r.Group = g
	r.EventsNeverHandled, r.StaleCommitsAccepted = &g.NeverHandled, &g.StaleAccepted
	return nil
}

// await polls the nodes' applied group state until the group has
// committed every partition up to heads, or the catch-up deadline passes.
// It returns the highest committed offset seen per partition and how long
// it waited (zero if the group never caught up).
func (w *ConsumerGroupWorkload) await(ctx context.Context, c *Cluster, cl *client, heads []uint64) ([]uint64, map[[2]uint64]bool, time.Duration) {
	catchUp := w.CatchUp
	if catchUp <= 0 {
		catchUp = time.Minute
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, catchUp)
	defer cancel()
	committed := make([]uint64, len(heads))
	parked := map[[2]uint64]bool{} // (partition, offset) parked by the group
	for {
		for i := range c.Size() {
			res, err := cl.group(ctx, c.Node(i).HTTP())
			if err != nil || !res.Found {
				continue
			}
			for _, a := range res.State.Partitions {
				if int(a.Partition) < len(committed) {
					committed[a.Partition] = max(committed[a.Partition], a.Committed)
				}
				for _, pr := range a.Parked {
					parked[[2]uint64{uint64(a.Partition), pr.Offset}] = true
				}
			}
		}
		done := true
		for p, h := range heads {
			done = done && committed[p] >= h
		}
		if done {
			return committed, parked, time.Since(start)
		}
		select {
		case <-ctx.Done():
			return committed, parked, 0
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readConsumerRecords reads one node's record file; lines that do not
// parse are counted, not returned.
func readConsumerRecords(path string) ([]wire.ConsumerRecord, int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	var recs []wire.ConsumerRecord
	bad := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r wire.ConsumerRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			bad++
			continue
		}
		recs = append(recs, r)
	}
	return recs, bad, sc.Err()
}

// checkGroup checks the members' records against the final log, the
// group's committed offsets taken as committed (per partition).
func checkGroup(recs []wire.ConsumerRecord, final NodeLog, committed []uint64, parked map[[2]uint64]bool) *GroupReport {
	g := &GroupReport{}
	type handling struct {
		p      int
		offset uint64
		id     uuid.UUID
	}
	handled := map[handling]int{}
	type commit struct {
		member     string
		gen, off   uint64
		start, end int64
	}
	type grant struct {
		member string
		gen    uint64
		at     int64
	}
	grants := map[int][]grant{}
	acked := map[int][]commit{}
	for _, r := range recs {
		switch r.Kind {
		case wire.RecordHandle:
			g.Handlings++
			handled[handling{r.Partition, r.Offset, r.ID}]++
		case wire.RecordGrant:
			g.Grants++
			grants[r.Partition] = append(grants[r.Partition], grant{r.Member, r.Generation, r.Start})
		case wire.RecordCommit:
			switch r.Outcome {
			case wire.CommitAcked:
				g.CommitsAcked++
				acked[r.Partition] = append(acked[r.Partition], commit{r.Member, r.Generation, r.Offset, r.Start, r.End})
			case wire.CommitStale:
				g.CommitsStale++
			default:
				g.CommitsFailed++
			}
		}
	}

	// At-least-once: every event below the committed offset was handled.
	for h, n := range handled {
		g.Handled++
		g.Redelivered += n - 1
		var evs []wire.ReadEvent
		if h.p >= 0 && h.p < len(final.Parts) {
			evs = final.Parts[h.p]
		}
		i, found := sort.Find(len(evs), func(i int) int { return cmp.Compare(h.offset, evs[i].Offset) })
		if !found || evs[i].ID != h.id {
			g.HandledNotInLog++
			g.note("p%d offset %d handled as %s, which the final log does not hold there", h.p, h.offset, h.id)
		}
	}
	for p, evs := range final.Parts {
		var upto uint64
		if p < len(committed) {
			upto = committed[p]
		}
		if p < len(final.Heads) && final.Heads[p] > upto {
			g.Lag += final.Heads[p] - upto
		}
		for _, e := range evs {
			if e.Offset >= upto {
				break
			}
			if strings.HasPrefix(e.Stream, "$") {
				continue // system streams are not delivered to handlers
			}
			if handled[handling{p, e.Offset, e.ID}] == 0 {
				if parked[[2]uint64{uint64(p), e.Offset}] {
					g.Parked++ // dead-lettered after failed attempts: not a loss
					continue
				}
				g.NeverHandled++
				g.note("p%d offset %d (%s) below committed offset %d, never handled", p, e.Offset, e.ID, upto)
			}
		}
	}

	// Fencing: an acknowledged commit carrying generation gen must not
	// have started after the partition was granted at a higher generation
	// (a grant seen by a member had applied) nor after a commit carrying a
	// higher generation was acknowledged (its grant had applied too).
	for p, cs := range acked {
		gs := slices.Clone(grants[p])
		slices.SortFunc(gs, func(a, b grant) int { return cmp.Compare(a.at, b.at) })
		byEnd := slices.Clone(cs)
		slices.SortFunc(byEnd, func(a, b commit) int { return cmp.Compare(a.end, b.end) })
		// Running maxima of the generation over time.
		grantMax := make([]uint64, len(gs))
		for i, x := range gs {
			grantMax[i] = x.gen
			if i > 0 {
				grantMax[i] = max(grantMax[i], grantMax[i-1])
			}
		}
		ackMax := make([]uint64, len(byEnd))
		for i, x := range byEnd {
			ackMax[i] = x.gen
			if i > 0 {
				ackMax[i] = max(ackMax[i], ackMax[i-1])
			}
		}
		for _, c := range cs {
			var newer uint64
			// Grants seen strictly before the commit was sent.
			if i := sort.Search(len(gs), func(i int) bool { return gs[i].at >= c.start }); i > 0 {
				newer = grantMax[i-1]
			}
			if i := sort.Search(len(byEnd), func(i int) bool { return byEnd[i].end >= c.start }); i > 0 {
				newer = max(newer, ackMax[i-1])
			}
			if newer <= c.gen {
				continue
			}
			g.StaleAccepted++
			g.note("p%d: %s's commit of offset %d at generation %d acknowledged, sent %s after generation %d had applied",
				p, c.member, c.off, c.gen, time.Unix(0, c.start).UTC().Format(time.RFC3339Nano), newer)
			for _, n := range byEnd {
				if n.end >= c.start {
					break
				}
				if n.gen > c.gen && n.off > c.off {
					g.StaleRewinding++
					g.note("p%d: %s's stale commit of offset %d (generation %d) after %s's of offset %d (generation %d)", p, c.member, c.off, c.gen, n.member, n.off, n.gen)
					break
				}
			}
		}
	}
	return g
}
