package eventstore

import "context"

// Validator checks the events of an append on the node that receives it,
// before anything is proposed (package schema's registry is one). It is
// called once per event, in order; the first error fails the whole append
// and is returned by Append unchanged, and nothing of the append is
// written. It returns the schema version the event was validated against
// (0: none), which the event carries in Metadata.SchemaVersion. It must be
// safe for concurrent use and must not modify the event.
type Validator interface {
	ValidateEvent(ctx context.Context, stream string, index int, e *EventData) (schemaVersion int, err error)
}

type validatorRef struct{ v Validator }

// SetValidator makes every later append on this node check its events
// with v; nil stops validation. Appends to system streams (names starting
// with '$', the framework's own) are never validated. Set it on every
// node: each validates the appends it receives.
func (s *Store) SetValidator(v Validator) {
	if v == nil {
		s.validator.Store(nil)
		return
	}
	s.validator.Store(&validatorRef{v})
}

// validate runs the validator over events and returns the schema version
// of each, or nil when there is no validator.
func (s *Store) validate(ctx context.Context, stream string, events []EventData) ([]int, error) {
	ref := s.validator.Load()
	if ref == nil || IsSystemStream(stream) {
		return nil, nil
	}
	versions := make([]int, len(events))
	for i := range events {
		if events[i].Type == "" {
			continue // refused by records, with the store's own error
		}
		v, err := ref.v.ValidateEvent(ctx, stream, i, &events[i])
		if err != nil {
			return nil, err
		}
		versions[i] = v
	}
	return versions, nil
}
