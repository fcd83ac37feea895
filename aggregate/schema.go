package aggregate

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"

	"github.com/invopop/jsonschema"
)

// Schemas is a schema registry (package schema's Registry is one): it
// registers a JSON Schema as the next version of a subject, or refuses it
// when it breaks the subject's compatibility mode.
type Schemas interface {
	RegisterSchema(ctx context.Context, subject string, jsonSchema []byte) (version int, err error)
}

// EventSchema returns the JSON Schema of the registered event type name,
// derived from its Go type: properties named as encoding/json names them,
// fields without omitempty required, and no property beyond the fields
// (a closed content model). It is meaningful with the JSON codec only.
func (r *Registry) EventSchema(name string) ([]byte, error) {
	r.mu.RLock()
	et := r.byName[name]
	r.mu.RUnlock()
	if et == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnregisteredEvent, name)
	}
	return deriveSchema(et.goType)
}

func deriveSchema(t reflect.Type) ([]byte, error) {
	// Anonymous: no $id from the Go package path, so moving a type does
	// not change its schema.
	ref := jsonschema.Reflector{Anonymous: true}
	return json.Marshal(ref.ReflectFromType(t))
}

// RegisterSchemas derives the schema of every event type of r (see
// EventSchema) and registers it in s under the event's name, so that
// appends are validated against the code's own types and a change to a
// Go event type that breaks what the log already holds fails here, at
// start, rather than when old events are loaded. It stops at the first
// refusal, with an error naming the event and its Go type and wrapping the
// registry's (for package schema, an *IncompatibleError listing each
// incompatibility). Registering an unchanged type again registers
// nothing. It returns the version of each event's schema.
//
// Events of an older shape stay readable through Upcast: evolve an event
// compatibly (new fields with omitempty, under BACKWARD) and raise its
// Revision when old events need an upcaster to fill in what they lack.
func (r *Registry) RegisterSchemas(ctx context.Context, s Schemas) (map[string]int, error) {
	if _, ok := r.codec.(jsonCodec); !ok {
		return nil, fmt.Errorf("aggregate: RegisterSchemas derives JSON Schemas and needs the JSON codec, not %T", r.codec)
	}
	r.mu.RLock()
	names := make([]string, 0, len(r.byName))
	types := make(map[string]reflect.Type, len(r.byName))
	for name, et := range r.byName {
		names = append(names, name)
		types[name] = et.goType
	}
	r.mu.RUnlock()
	sort.Strings(names)
	out := make(map[string]int, len(names))
	for _, name := range names {
		sch, err := deriveSchema(types[name])
		if err != nil {
			return nil, fmt.Errorf("aggregate: schema of event %q (%v): %w", name, types[name], err)
		}
		v, err := s.RegisterSchema(ctx, name, sch)
		if err != nil {
			return nil, fmt.Errorf("aggregate: event %q (Go type %v) does not fit the schemas registered for it: %w", name, types[name], err)
		}
		out[name] = v
	}
	return out, nil
}
