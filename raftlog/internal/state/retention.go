package state

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// Retention (DESIGN.md, "Retention"): rules set by CmdRetention entries,
// per key, per key prefix (a category) and per partition, judged when a
// record is read against the shard's applied time (the leader's stamp of
// the last entry applied, made monotonic), never against a replica's
// clock. Every replica that has applied the same index therefore hides the
// same records, and a record once hidden stays hidden: the applied time,
// a key's head and a partition's low offset only grow. Relaxing a rule
// shows again what was hidden and not yet scavenged; a scavenge raises the
// partition's low offset through the log first (RetTruncatePartition), so
// what it removes is hidden on every replica at the same index.

// Bounds on the rules a shard holds: they are kept in memory and written
// whole with the table they change in.
const (
	maxKeyRules    = 65536
	maxPrefixRules = 1024
)

// Rule is the retention of a key: records older than MaxAge (nanoseconds),
// all but the newest MaxCount, and those with a key sequence below Before
// are hidden. Zero fields set no limit.
type Rule struct {
	MaxAge   int64
	MaxCount uint64
	Before   uint64
}

func (r Rule) zero() bool { return r == Rule{} }

// PartitionRule caps a partition: records older than MaxAge are hidden;
// MaxBytes is enforced by the scavenge, which raises Low (the offset below
// which every record is gone) through the log.
type PartitionRule struct {
	MaxAge   int64
	MaxBytes uint64
	Low      uint64
}

type prefixRule struct {
	prefix string
	Rule
}

// retention is a shard's rules. A stored one is never changed (an apply
// stores a new one, sharing what it did not change), so readers use it
// under the tables' read lock and a frozen table encodes it by pointer.
type retention struct {
	keys     []map[string]Rule // per hosted partition
	prefixes []prefixRule      // sorted by prefix
	parts    []PartitionRule   // per hosted partition
	nKeys    int
}

func newRetention(slots int) *retention {
	r := &retention{keys: make([]map[string]Rule, slots), parts: make([]PartitionRule, slots)}
	for i := range r.keys {
		r.keys[i] = map[string]Rule{}
	}
	return r
}

// empty reports whether no rule hides anything.
func (r *retention) empty() bool {
	if r.nKeys > 0 || len(r.prefixes) > 0 {
		return false
	}
	for _, p := range r.parts {
		if p.MaxAge > 0 || p.Low > 0 {
			return false
		}
	}
	return true
}

// hasAge reports whether a rule hides records by age: only then does the
// shard's time need to advance without appends (the leader's ticks).
func (r *retention) hasAge() bool {
	for _, p := range r.parts {
		if p.MaxAge > 0 {
			return true
		}
	}
	for _, p := range r.prefixes {
		if p.MaxAge > 0 {
			return true
		}
	}
	for _, m := range r.keys {
		for _, k := range m {
			if k.MaxAge > 0 {
				return true
			}
		}
	}
	return false
}

// rule is the rule of key in partition slot: its own, else that of the
// longest prefix it starts with.
func (r *retention) rule(slot int, key string) (Rule, bool) {
	if k, ok := r.keys[slot][key]; ok {
		return k, true
	}
	best := -1
	for i, p := range r.prefixes {
		if strings.HasPrefix(key, p.prefix) && (best < 0 || len(p.prefix) > len(r.prefixes[best].prefix)) {
			best = i
		}
	}
	if best < 0 {
		return Rule{}, false
	}
	return r.prefixes[best].Rule, true
}

// expired reports whether a record stamped t is older than maxAge at now.
func expired(t, now, maxAge int64) bool { return maxAge > 0 && now-t > maxAge }

// firstSeq is the lowest key sequence rule keeps of a key at head (age
// aside).
func (r Rule) firstSeq(head uint64) uint64 {
	first := max(r.Before, 1)
	if r.MaxCount > 0 && head > r.MaxCount {
		first = max(first, head-r.MaxCount+1)
	}
	return first
}

// retentionView judges records of one partition against the rules and the
// applied time of one read view.
type retentionView struct {
	r    *retention
	slot int
	now  int64
	// head returns a key's current sequence (only rules with a max count
	// need it); heads caches its answers for the view.
	head  func(key string) (uint64, error)
	heads map[string]uint64
}

// hides reports whether the stored record v at offset off is hidden.
func (rv *retentionView) hides(v []byte, off uint64) (bool, error) {
	p := rv.r.parts[rv.slot]
	if off < p.Low {
		return true, nil
	}
	key, seq, t, err := storedKeySeqTime(v)
	if err != nil {
		return false, err
	}
	if expired(t, rv.now, p.MaxAge) {
		return true, nil
	}
	rule, ok := rv.r.rule(rv.slot, string(key))
	if !ok {
		return false, nil
	}
	if expired(t, rv.now, rule.MaxAge) || seq < rule.Before {
		return true, nil
	}
	if rule.MaxCount == 0 {
		return false, nil
	}
	head, ok := rv.heads[string(key)]
	if !ok {
		if head, err = rv.head(string(key)); err != nil {
			return false, err
		}
		if rv.heads == nil {
			rv.heads = map[string]uint64{}
		}
		rv.heads[string(key)] = head
	}
	return seq < rule.firstSeq(head), nil
}

// storedKeySeqTime returns the key (aliasing b), key sequence and time of
// a stored record without decoding the rest.
func storedKeySeqTime(b []byte) ([]byte, uint64, int64, error) {
	d := wire.Decoder{B: b}
	if v := d.Byte(); d.Err == nil && v != recordFormatV1 {
		return nil, 0, 0, fmt.Errorf("%w: record format %d", core.ErrCorrupt, v)
	}
	key := d.Raw(d.Uvarint())
	seq := d.Uvarint()
	d.Raw(16)
	t := d.Varint()
	return key, seq, t, d.Err
}

// with returns the rules after op, or an error (the entry's outcome) that
// leaves them as they were.
func (r *retention) with(f *Engine, op *wire.RetentionOp) (*retention, error) {
	if err := op.Check(f.totalPartitions); err != nil {
		return nil, err
	}
	next := *r
	rule := Rule{MaxAge: op.MaxAge, MaxCount: op.MaxCount, Before: op.Before}
	switch op.Kind {
	case wire.RetKey:
		slot, ok := f.slot(op.Partition)
		if !ok {
			return nil, fmt.Errorf("%w: partition %d is not in shard %d", core.ErrUnknownPartition, op.Partition, f.shard)
		}
		_, had := r.keys[slot][op.Key]
		if !had && !rule.zero() && r.nKeys >= maxKeyRules {
			return nil, fmt.Errorf("%w: shard %d holds %d key retention rules, the most it keeps", core.ErrConfig, f.shard, maxKeyRules)
		}
		next.keys = slices.Clone(r.keys)
		next.keys[slot] = maps.Clone(r.keys[slot])
		if rule.zero() {
			delete(next.keys[slot], op.Key)
		} else {
			next.keys[slot][op.Key] = rule
		}
		next.nKeys += len(next.keys[slot]) - len(r.keys[slot])
	case wire.RetPrefix:
		i := sort.Search(len(r.prefixes), func(i int) bool { return r.prefixes[i].prefix >= op.Key })
		had := i < len(r.prefixes) && r.prefixes[i].prefix == op.Key
		next.prefixes = slices.Clone(r.prefixes)
		switch {
		case had && rule.zero():
			next.prefixes = slices.Delete(next.prefixes, i, i+1)
		case had:
			next.prefixes[i].Rule = rule
		case rule.zero():
		case len(r.prefixes) >= maxPrefixRules:
			return nil, fmt.Errorf("%w: shard %d holds %d prefix retention rules, the most it keeps", core.ErrConfig, f.shard, maxPrefixRules)
		default:
			next.prefixes = slices.Insert(next.prefixes, i, prefixRule{prefix: op.Key, Rule: rule})
		}
	case wire.RetPartition, wire.RetTruncatePartition:
		slot, ok := f.slot(op.Partition)
		if !ok {
			return nil, fmt.Errorf("%w: partition %d is not in shard %d", core.ErrUnknownPartition, op.Partition, f.shard)
		}
		next.parts = slices.Clone(r.parts)
		if op.Kind == wire.RetPartition {
			next.parts[slot].MaxAge, next.parts[slot].MaxBytes = op.MaxAge, op.MaxBytes
		} else {
			// The low offset only rises, and never past what was appended.
			next.parts[slot].Low = max(r.parts[slot].Low, min(op.Before, f.next[slot].Load()))
		}
	case wire.RetTick:
		return r, nil
	}
	return &next, nil
}

// Retention applies a retention entry stamped t: its time advances the
// shard's like any entry's, and the rules change at this index on every
// replica. A refused change (too many rules, a partition of another
// shard) is the entry's outcome and changes nothing.
func (b *Batch) Retention(op *wire.RetentionOp, t int64) error {
	b.lastTime = max(b.lastTime, t)
	f := b.a.f
	next, err := f.ret.with(f, op)
	if err != nil || next == f.ret {
		return err
	}
	f.mu.Lock()
	f.ret = next
	f.mem.retDirty = true
	f.mu.Unlock()
	return nil
}

// The stored form of a shard's rules (meta bucket, key "retention"),
// written whole by the flush of a table that changed them:
//
//	uvarint  key rules; each: uvarint partition, string key, rule
//	uvarint  prefix rules; each: string prefix, rule
//	uvarint  partitions with caps; each: uvarint partition, varint max age, uvarint max bytes, uvarint low offset
//
// rule: varint max age, uvarint max count, uvarint before. Everything is
// sorted, so replicas write the same bytes.
var metaRetention = []byte("retention")

func (f *Engine) encodeRetention(r *retention) []byte {
	var b []byte
	b = binary.AppendUvarint(b, uint64(r.nKeys))
	for slot, m := range r.keys {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			b = binary.AppendUvarint(b, uint64(f.partitions[slot]))
			b = wire.AppendString(b, k)
			b = appendRule(b, m[k])
		}
	}
	b = binary.AppendUvarint(b, uint64(len(r.prefixes)))
	for _, p := range r.prefixes {
		b = wire.AppendString(b, p.prefix)
		b = appendRule(b, p.Rule)
	}
	var parts []int
	for slot, p := range r.parts {
		if p != (PartitionRule{}) {
			parts = append(parts, slot)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(parts)))
	for _, slot := range parts {
		p := r.parts[slot]
		b = binary.AppendUvarint(b, uint64(f.partitions[slot]))
		b = binary.AppendVarint(b, p.MaxAge)
		b = binary.AppendUvarint(b, p.MaxBytes)
		b = binary.AppendUvarint(b, p.Low)
	}
	return b
}

func appendRule(b []byte, r Rule) []byte {
	b = binary.AppendVarint(b, r.MaxAge)
	b = binary.AppendUvarint(b, r.MaxCount)
	return binary.AppendUvarint(b, r.Before)
}

func decodeRule(d *wire.Decoder) Rule {
	return Rule{MaxAge: d.Varint(), MaxCount: d.Uvarint(), Before: d.Uvarint()}
}

func (f *Engine) decodeRetention(b []byte) (*retention, error) {
	r := newRetention(len(f.partitions))
	if b == nil {
		return r, nil
	}
	d := wire.Decoder{B: b}
	slotOf := func() int {
		slot, ok := f.slot(core.Partition(min(d.Uvarint(), 1<<31)))
		if !ok {
			d.Fail()
		}
		return slot
	}
	for n := d.Count(3); n > 0 && d.Err == nil; n-- {
		slot := slotOf()
		k := d.Str()
		rule := decodeRule(&d)
		if d.Err == nil {
			r.keys[slot][k] = rule
		}
	}
	r.nKeys = 0
	for _, m := range r.keys {
		r.nKeys += len(m)
	}
	for n := d.Count(4); n > 0 && d.Err == nil; n-- {
		r.prefixes = append(r.prefixes, prefixRule{prefix: d.Str(), Rule: decodeRule(&d)})
	}
	for n := d.Count(4); n > 0 && d.Err == nil; n-- {
		slot := slotOf()
		p := PartitionRule{MaxAge: d.Varint(), MaxBytes: d.Uvarint(), Low: d.Uvarint()}
		if d.Err == nil {
			r.parts[slot] = p
		}
	}
	if err := d.Finish(); err != nil {
		return nil, fmt.Errorf("retention rules: %w", err)
	}
	return r, nil
}

// KeyRetention returns the rule in force for key in partition p (its
// own, or its longest prefix's) and whether there is one.
func (f *Engine) KeyRetention(p core.Partition, key string) (Rule, bool) {
	slot, ok := f.slot(p)
	if !ok {
		return Rule{}, false
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.ret.rule(slot, key)
}

// PartitionRetention returns partition p's caps and low offset.
func (f *Engine) PartitionRetention(p core.Partition) PartitionRule {
	slot, ok := f.slot(p)
	if !ok {
		return PartitionRule{}
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.ret.parts[slot]
}

// HasAgeRetention reports whether a rule of this shard hides records by
// age, so that its time must advance while no one appends.
func (f *Engine) HasAgeRetention() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.ret.hasAge()
}

// AppliedTime is the shard's time as of the last entry applied (Unix
// nanoseconds): what retention is judged against.
func (f *Engine) AppliedTime() int64 { return f.appliedTime.Load() }
