package schema

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/esraft/esraft/eventstore"
)

// ValidationMode says how appends to the streams of a category are
// validated.
type ValidationMode string

// The validation modes.
const (
	// ValidationOff: events are not validated.
	ValidationOff ValidationMode = "off"
	// ValidationAdvisory: events of registered types are validated; an
	// invalid one is logged and counted (Stats.AdvisoryFailures) but
	// appended.
	ValidationAdvisory ValidationMode = "advisory"
	// ValidationRegistered (the default): events of registered types must
	// be valid; events of unregistered types are appended unchecked.
	ValidationRegistered ValidationMode = "registered"
	// ValidationRequired: every event's type must be registered and the
	// event valid.
	ValidationRequired ValidationMode = "required"
)

// DefaultValidationMode applies to categories nobody configured.
const DefaultValidationMode = ValidationRegistered

// ParseValidationMode returns the mode named s (case-insensitive).
func ParseValidationMode(s string) (ValidationMode, error) {
	m := ValidationMode(strings.ToLower(s))
	switch m {
	case ValidationOff, ValidationAdvisory, ValidationRegistered, ValidationRequired:
		return m, nil
	}
	return "", fmt.Errorf("%w: %q (one of off, advisory, registered, required)", ErrInvalidValidationMode, s)
}

// ValidationMode returns the mode of category ("" : the default).
func (r *Registry) ValidationMode(category string) ValidationMode {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.view.validationOf(category)
}

func (v *view) validationOf(category string) ValidationMode {
	if m, ok := v.validation[category]; ok && category != "" {
		return m
	}
	if v.defaultValidation != "" {
		return v.defaultValidation
	}
	return DefaultValidationMode
}

// Stats counts this node's validations since Open.
type Stats struct {
	// Validated events passed their schema.
	Validated uint64 `json:"validated"`
	// Refused events failed the append they were in.
	Refused uint64 `json:"refused"`
	// AdvisoryFailures are invalid events appended under
	// ValidationAdvisory.
	AdvisoryFailures uint64 `json:"advisory_failures"`
}

type stats struct{ validated, refused, advisory atomic.Uint64 }

// Stats returns this node's validation counters.
func (r *Registry) Stats() Stats {
	return Stats{Validated: r.stats.validated.Load(), Refused: r.stats.refused.Load(), AdvisoryFailures: r.stats.advisory.Load()}
}

var _ eventstore.Validator = (*Registry)(nil)

// ValidateEvent implements eventstore.Validator: it checks e against the
// latest version of its type, or the one e.Metadata.SchemaVersion
// declares, under the validation mode of stream's category.
func (r *Registry) ValidateEvent(ctx context.Context, stream string, index int, e *eventstore.EventData) (int, error) {
	mode, ver := r.lookup(stream, e)
	if mode == ValidationOff {
		return 0, nil
	}
	declared := e.Metadata.SchemaVersion
	if ver == nil && (mode == ValidationRequired || declared > 0) {
		// The type or version may have been registered on another node
		// moments ago: look again after a read barrier before refusing.
		if err := r.Sync(ctx); err != nil {
			return 0, err
		}
		mode, ver = r.lookup(stream, e)
	}
	if ver == nil {
		reason := "type not registered, and the category requires registered types"
		if declared > 0 {
			reason = fmt.Sprintf("declared schema version %d is not registered", declared)
		}
		switch {
		case mode == ValidationAdvisory:
			r.advisory(stream, index, e, 0, "", reason)
			return 0, nil
		case mode == ValidationRequired || declared > 0:
			r.stats.refused.Add(1)
			return 0, &InvalidEventError{Stream: stream, Index: index, Type: e.Type, Reason: reason}
		}
		return 0, nil
	}
	path, reason, ok := ver.Schema.Validate(e.Data)
	switch {
	case ok:
		r.stats.validated.Add(1)
		return ver.Version, nil
	case mode == ValidationAdvisory:
		r.advisory(stream, index, e, ver.Version, path, reason)
		return 0, nil
	}
	r.stats.refused.Add(1)
	return 0, &InvalidEventError{Stream: stream, Index: index, Type: e.Type, Version: ver.Version, Path: path, Reason: reason}
}

// lookup returns the mode of stream's category and the version e is to be
// validated against (nil: none registered).
func (r *Registry) lookup(stream string, e *eventstore.EventData) (ValidationMode, *Version) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	mode := r.view.validationOf(eventstore.Category(stream))
	if mode == ValidationOff {
		return mode, nil
	}
	n := Latest
	if e.Metadata.SchemaVersion > 0 {
		n = e.Metadata.SchemaVersion
	}
	ver, err := r.view.get(e.Type, n)
	if err != nil {
		return mode, nil
	}
	return mode, ver
}

func (r *Registry) advisory(stream string, index int, e *eventstore.EventData, version int, path, reason string) {
	r.stats.advisory.Add(1)
	r.logger.Warn("schema: invalid event appended (advisory validation)", "stream", stream, "index", index,
		"type", e.Type, "version", version, "path", path, "reason", reason)
}
