package state

import (
	"errors"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/cgroup"
	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// applyGroup applies one group operation at leader time t. It runs on the
// FSM goroutine; f.mu guards the groups against readers.
func (f *Engine) applyGroup(o *wire.GroupOp, t int64) core.GroupOutcome {
	if err := o.Check(); err != nil {
		return core.GroupOutcome{Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	was := f.cgroups[o.Group]
	out, g := cgroup.Apply(was, o, t, f.totalPartitions)
	if g == nil {
		delete(f.cgroups, o.Group)
	} else {
		f.cgroups[o.Group] = g
	}
	if was != nil || g != nil {
		f.mem.groupsDirty[o.Group] = struct{}{}
	}
	return out
}

// GroupState returns a consumer group as applied on this node.
func (f *Engine) GroupState(name string) (core.GroupState, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	g := f.cgroups[name]
	if g == nil {
		return core.GroupState{}, false
	}
	return g.State(name), true
}

// loadGroups reads the consumer groups from tx.
func (f *Engine) loadGroups(tx *bolt.Tx) error {
	f.cgroups = map[string]*cgroup.Group{}
	b := tx.Bucket(bucketGroups)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		v, err := openValue(k, v)
		if err != nil {
			return err
		}
		g, err := cgroup.Decode(v)
		if err != nil {
			return fmt.Errorf("raftlog: consumer group %q: %w", k, err)
		}
		f.cgroups[string(k)] = g
		return nil
	})
}

// flushGroups writes the consumer groups a table changed, encoded as of
// its last index, into tx; a group encoded as nil was deleted.
func flushGroups(tx *bolt.Tx, groups map[string][]byte) error {
	if len(groups) == 0 {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(bucketGroups)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(groups))
	for n := range groups {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, n := range names {
		if groups[n] == nil {
			errs = append(errs, b.Delete([]byte(n)))
		} else {
			errs = append(errs, putValue(b, []byte(n), groups[n]))
		}
	}
	return errors.Join(errs...)
}
