package state

import (
	"encoding/binary"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"log/slog"
	"strings"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// The apply digest. Replicas apply the same entries to the same state, so
// they decide the same of each: the same offsets, key sequences, times,
// duplicates and refusals for an append, the same group state for a group
// operation. A replica that decided differently (a bug in an apply, or
// state that went wrong under it) diverges from there on, and the damage
// shows much later, elsewhere: a consumer group that accepts stale
// commits, an acknowledged write that is not where its answer said. The
// digest names the place: each replica folds what it decided for every
// entry of a window of digestEvery raft indexes into a hash and logs it
// when the window ends, so the first window whose hashes differ between
// replicas holds the first entry decided differently. The fault suite
// compares them (systemtest/faulttest).
//
// A window is logged only if this process applied every entry of it:
// one that starts at or below the index the node resumed from (its state
// file's, at a start, or a full copy's, installed from a leader) is not.
// Raft hands the FSM commands and configuration changes only (no no-ops
// or barriers), alike on every replica, so indexes skip; a window ends
// with its last index or, if raft does not hand that one over, with the
// first entry past it. Only the FSM goroutine uses it.

// applyDigest folds outcomes into windows of every raft indexes; a zero
// every turns it off.
type applyDigest struct {
	every  uint64
	trace  io.Writer // every entry folded, a line each (Options.ApplyTrace)
	h      hash.Hash64
	from   uint64 // the lowest index this process folds: above where it resumed
	window uint64 // the window being folded, plus one (0: none)
	whole  bool   // it started at or after from: it is folded whole
	buf    []byte
}

// resume starts the digest again after the state came to hold every entry
// up to applied without this process applying them (Open, Restore).
func (d *applyDigest) resume(applied uint64) {
	if d.trace != nil {
		fmt.Fprintf(d.trace, "resume at %d\n", applied)
	}
	d.from, d.window, d.whole = applied+1, 0, false
}

// fold folds what the entry at index decided (its response in ApplyBatch)
// and logs the window it ends, on log (the engine's, which names the
// shard).
func (d *applyDigest) fold(index uint64, resp any, log *slog.Logger) {
	if d.trace != nil {
		fmt.Fprintf(d.trace, "%d %s\n", index, describeOutcome(resp))
	}
	if d.every == 0 {
		return
	}
	if d.h == nil {
		d.h = fnv.New64a()
	}
	if w := (index - 1) / d.every; d.window != w+1 {
		d.end(log)
		d.window, d.whole = w+1, d.from <= w*d.every+1
		d.h.Reset()
	}
	if !d.whole {
		return
	}
	d.buf = encodeOutcome(binary.BigEndian.AppendUint64(d.buf[:0], index), resp)
	d.h.Write(d.buf)
	if index%d.every == 0 {
		d.end(log)
	}
}

// end logs the window being folded, if whole, and ends it.
func (d *applyDigest) end(log *slog.Logger) {
	if d.whole {
		to := d.window * d.every
		log.Info("raftlog: apply digest", "from", to-d.every+1, "to", to, "digest", d.h.Sum64())
	}
	d.whole = false
}

// encodeOutcome appends what an entry decided, as fold hashes it.
func encodeOutcome(b []byte, resp any) []byte {
	str := func(b []byte, s string) []byte {
		return append(binary.AppendUvarint(b, uint64(len(s))), s...)
	}
	errStr := func(b []byte, err error) []byte {
		if err == nil {
			return append(b, 0)
		}
		return str(append(b, 1), err.Error())
	}
	u := binary.AppendUvarint
	switch r := resp.(type) {
	case nil: // a configuration change, or a retention change applied
		return append(b, 'n')
	case []core.AppendOutcome:
		b = u(append(b, 'a'), uint64(len(r)))
		for _, o := range r {
			res := o.Result
			b = u(b, uint64(res.Partition))
			b = u(b, res.FirstOffset)
			b = u(b, res.FirstKeySeq)
			b = u(b, uint64(res.Count))
			b = binary.AppendVarint(b, res.Time.UnixNano())
			b = u(b, uint64(res.Position.Shard))
			b = u(b, res.Position.Index)
			if res.Duplicate {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
			b = errStr(b, o.Err)
		}
		return b
	case core.GroupOutcome:
		s := r.State
		b = errStr(str(append(b, 'g'), s.Group), r.Err)
		b = u(b, s.Generation)
		b = u(b, uint64(len(s.Members)))
		for _, m := range s.Members {
			b = binary.AppendVarint(str(b, m.ID), m.LastSeen.UnixNano())
			b = binary.AppendVarint(b, int64(m.SessionTimeout))
		}
		b = u(b, uint64(len(s.Partitions)))
		for _, p := range s.Partitions {
			b = u(str(str(u(b, uint64(p.Partition)), p.Owner), p.Next), p.Generation)
			b = u(u(b, p.Committed), p.Skipped)
			b = u(b, uint64(len(p.Parked)))
			for _, pr := range p.Parked {
				b = u(str(u(b, pr.Offset), pr.Key), uint64(pr.Attempts))
			}
		}
		return b
	case string:
		return str(append(b, 's'), r)
	case error:
		return str(append(b, 'e'), r.Error())
	}
	return append(b, '?')
}

// describeOutcome renders what an entry decided for the apply trace: the
// fields the digest folds, readable.
func describeOutcome(resp any) string {
	var b strings.Builder
	switch r := resp.(type) {
	case nil:
		return "-"
	case []core.AppendOutcome:
		for i, o := range r {
			if i > 0 {
				b.WriteString(" | ")
			}
			res := o.Result
			if o.Err != nil {
				fmt.Fprintf(&b, "err %q", o.Err.Error())
				continue
			}
			fmt.Fprintf(&b, "p%d@%d+%d seq %d t %d", res.Partition, res.FirstOffset, res.Count, res.FirstKeySeq, res.Time.UnixNano())
			if res.Duplicate {
				b.WriteString(" dup")
			}
		}
	case core.GroupOutcome:
		s := r.State
		fmt.Fprintf(&b, "group %q gen %d", s.Group, s.Generation)
		if r.Err != nil {
			fmt.Fprintf(&b, " err %q", r.Err.Error())
		}
		for _, m := range s.Members {
			fmt.Fprintf(&b, " m %s seen %d", m.ID, m.LastSeen.UnixNano())
		}
		for _, p := range s.Partitions {
			fmt.Fprintf(&b, " p%d %s/%s g%d c%d", p.Partition, p.Owner, p.Next, p.Generation, p.Committed)
		}
	case string:
		return "cluster " + r
	case error:
		return fmt.Sprintf("err %q", r.Error())
	default:
		return fmt.Sprintf("%T", resp)
	}
	return b.String()
}
