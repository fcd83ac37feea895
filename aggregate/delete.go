package aggregate

import (
	"context"
	"errors"
	"fmt"

	"github.com/esraft/esraft/eventstore"
)

// StreamDeleter is what Delete needs of a Store beyond the Store
// interface; *eventstore.Store has it.
type StreamDeleter interface {
	DeleteStream(ctx context.Context, stream string, expected eventstore.ExpectedVersion) (eventstore.Position, error)
}

var _ StreamDeleter = (*eventstore.Store)(nil)

// ErrDeleteUnsupported: the repository's store has no DeleteStream.
var ErrDeleteUnsupported = errors.New("aggregate: the store cannot delete streams")

// Delete deletes aggregate id: its snapshot stream first, then its stream
// (a soft delete: the events disappear from every read and are erased
// from the nodes' state files at their next flush; see
// eventstore.Store.DeleteStream). The snapshots go first so that no copy
// of the state outlives the events: if the second delete fails, the
// aggregate still loads, from its events, and Delete can be called again.
// expected applies to the aggregate's stream (eventstore.Any: whatever its
// version); deleting a deleted aggregate succeeds.
func (r *Repository[S]) Delete(ctx context.Context, id string, expected eventstore.ExpectedVersion) error {
	if id == "" {
		return ErrEmptyID
	}
	d, ok := r.store.(StreamDeleter)
	if !ok {
		return fmt.Errorf("%w: %T", ErrDeleteUnsupported, r.store)
	}
	if _, err := d.DeleteStream(ctx, r.typ.SnapshotStream(id), eventstore.Any); err != nil {
		return fmt.Errorf("aggregate: delete the snapshots of %s: %w", r.typ.Stream(id), err)
	}
	if _, err := d.DeleteStream(ctx, r.typ.Stream(id), expected); err != nil {
		return fmt.Errorf("aggregate: delete %s: %w", r.typ.Stream(id), err)
	}
	return nil
}
