package schema

import (
	"errors"
	"fmt"
	"strings"
)

// Errors of the registry. Errors that carry data are typed
// (*IncompatibleError, *InvalidEventError); the others are sentinels,
// wrapped with detail, for errors.Is.
var (
	// ErrInvalidSchema: a schema that is not a JSON Schema (bad JSON, a
	// keyword of the wrong shape, a $ref to anything outside the schema
	// itself, or more than MaxSchemaBytes).
	ErrInvalidSchema = errors.New("schema: invalid schema")
	// ErrIncompatible matches every *IncompatibleError.
	ErrIncompatible = errors.New("schema: incompatible schema")
	// ErrInvalidEvent matches every *InvalidEventError.
	ErrInvalidEvent = errors.New("schema: invalid event")
	// ErrSubjectNotFound: a subject with no version.
	ErrSubjectNotFound = errors.New("schema: subject not found")
	// ErrVersionNotFound: a version the subject does not have.
	ErrVersionNotFound = errors.New("schema: version not found")
	// ErrSchemaNotFound: a schema ID that names no registration.
	ErrSchemaNotFound = errors.New("schema: schema not found")
	// ErrInvalidSubject: an empty subject name or one over 255 bytes.
	ErrInvalidSubject = errors.New("schema: invalid subject name")
	// ErrInvalidCompatibility: a compatibility mode other than the seven
	// documented ones.
	ErrInvalidCompatibility = errors.New("schema: invalid compatibility mode")
	// ErrInvalidValidationMode: a validation mode other than off,
	// advisory, registered and required.
	ErrInvalidValidationMode = errors.New("schema: invalid validation mode")
	// ErrConflict: registrations kept racing with others for longer than
	// the registry retries; nothing was registered by this call.
	ErrConflict = errors.New("schema: too many concurrent registry changes")
	// ErrClosed: the registry was closed.
	ErrClosed = errors.New("schema: registry closed")
)

// Incompatibility is one breaking difference between two schemas.
type Incompatibility struct {
	// Kind names the rule broken: "type_narrowed", "required_property_added",
	// "property_added_to_open_content_model", ...
	Kind string `json:"kind"`
	// Path is the JSON pointer, in the schema, of the keyword at fault
	// ("#/properties/amount/type").
	Path string `json:"path"`
	// Message says what changed and why old data or old readers break.
	Message string `json:"message"`
	// Version is the registered version the new schema was checked
	// against, and Direction whether the new schema must read data of it
	// ("backward") or it must read data of the new schema ("forward").
	Version   int    `json:"version"`
	Direction string `json:"direction"`
}

func (i Incompatibility) String() string {
	return fmt.Sprintf("%s at %s (%s against version %d): %s", i.Kind, i.Path, i.Direction, i.Version, i.Message)
}

// IncompatibleError refuses a registration that breaks the subject's
// compatibility mode. Nothing was registered.
type IncompatibleError struct {
	Subject           string
	Mode              Compatibility
	Incompatibilities []Incompatibility
}

func (e *IncompatibleError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "schema: %s: new schema is not %s compatible: ", e.Subject, e.Mode)
	for i, in := range e.Incompatibilities {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(in.String())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrIncompatible) true.
func (e *IncompatibleError) Is(target error) bool { return target == ErrIncompatible }

// InvalidEventError refuses an append one of whose events does not match
// its schema, or whose type must be registered and is not. Nothing of the
// append was written.
type InvalidEventError struct {
	Stream string
	// Index is the event's position in the append (from 0).
	Index int
	Type  string
	// Version is the schema version checked against; 0 when the type has
	// no registered version (or not the declared one).
	Version int
	// Path is the JSON pointer, in the event's data, of the offending
	// value ("/lines/0/qty"; "" for the whole document).
	Path string
	// Reason says what is wrong there.
	Reason string
}

func (e *InvalidEventError) Error() string {
	if e.Version == 0 {
		return fmt.Sprintf("schema: event %d of type %q appended to %q: %s", e.Index, e.Type, e.Stream, e.Reason)
	}
	return fmt.Sprintf("schema: event %d of type %q appended to %q does not match schema version %d at %q: %s",
		e.Index, e.Type, e.Stream, e.Version, e.Path, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidEvent) true.
func (e *InvalidEventError) Is(target error) bool { return target == ErrInvalidEvent }
