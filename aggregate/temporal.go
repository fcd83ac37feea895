package aggregate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/esraft/esraft/eventstore"
)

// LoadAt returns aggregate id as it was at version (after its first
// version events): from its latest snapshot if that is at or below
// version, else from its events alone, never from a snapshot beyond it.
// Only the latest snapshot is kept, so a load below it reads every event
// up to version. A version beyond the aggregate's last is a
// *VersionError; version 0, or an aggregate without events, a
// *NotFoundError.
func (r *Repository[S]) LoadAt(ctx context.Context, id string, version uint64) (Aggregate[S], error) {
	if id == "" {
		return Aggregate[S]{}, ErrEmptyID
	}
	if version == 0 {
		return Aggregate[S]{}, &NotFoundError{Type: r.typ.category, ID: id}
	}
	l, err := r.loadUpTo(ctx, id, version)
	if err != nil {
		return Aggregate[S]{}, err
	}
	if l.agg.Version < version {
		return Aggregate[S]{}, &VersionError{Type: r.typ.category, ID: id, Version: version, Last: l.agg.Version}
	}
	return l.agg, nil
}

// LoadAsOf returns aggregate id as it was at time t: with every event
// stamped at or before t and none after. Event times never decrease along
// a stream (the log stamps them with its leader's clock, made monotonic
// per shard), so the version is found by a binary search over the
// stream, O(log n) reads of one event, and the state is then loaded as
// LoadAt loads it. An aggregate whose first event is after t (or that has
// none) is a *NotFoundError.
func (r *Repository[S]) LoadAsOf(ctx context.Context, id string, t time.Time) (Aggregate[S], error) {
	if id == "" {
		return Aggregate[S]{}, ErrEmptyID
	}
	v, err := r.versionAsOf(ctx, id, t)
	if err != nil {
		return Aggregate[S]{}, err
	}
	return r.LoadAt(ctx, id, v)
}

// versionAsOf is the version of the last event of aggregate id stamped at
// or before t (0 if none).
func (r *Repository[S]) versionAsOf(ctx context.Context, id string, t time.Time) (uint64, error) {
	stream := r.typ.Stream(id)
	read := func(evs []eventstore.Event, err error) (*eventstore.Event, error) {
		if errors.Is(err, eventstore.ErrStreamDeleted) {
			return nil, &NotFoundError{Type: r.typ.category, ID: id}
		}
		if err != nil {
			return nil, fmt.Errorf("aggregate: load %s as of %s: %w", stream, t.Format(time.RFC3339Nano), err)
		}
		if len(evs) == 0 {
			return nil, nil
		}
		return &evs[0], nil
	}
	last, err := read(r.store.ReadStreamBackward(ctx, stream, 0, 1))
	if err != nil || last == nil {
		return 0, err
	}
	if !last.Time.After(t) {
		return last.Version, nil
	}
	// The first version stamped after t is in [lo, hi]; hi is one.
	lo, hi := uint64(1), last.Version
	for lo < hi {
		mid := lo + (hi-lo)/2
		ev, err := read(r.store.ReadStream(ctx, stream, mid, 1))
		if err != nil {
			return 0, err
		}
		if ev == nil || ev.Time.After(t) {
			hi = mid
		} else {
			lo = ev.Version + 1
		}
	}
	return lo - 1, nil
}

// VersionError reports a LoadAt of a version the aggregate has not
// reached.
type VersionError struct {
	Type, ID string
	// Version is the version asked for; Last is the aggregate's last.
	Version, Last uint64
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("aggregate: %s %q has no version %d: its last is %d", e.Type, e.ID, e.Version, e.Last)
}

// Is makes errors.Is(err, ErrNoSuchVersion) true.
func (e *VersionError) Is(target error) bool { return target == ErrNoSuchVersion }
