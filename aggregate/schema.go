package aggregate

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

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
	s := ref.ReflectFromType(t)
	allowNulls(s, t, s.Definitions, map[reflect.Type]bool{})
	return json.Marshal(s)
}

// allowNulls lets the properties encoding/json writes as null (nil
// pointers, slices, maps and interfaces without omitempty) be null: the
// generator gives them their element's type only, which would refuse
// events the code writes.
func allowNulls(s *jsonschema.Schema, t reflect.Type, defs jsonschema.Definitions, seen map[reflect.Type]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s == nil {
		return
	}
	if name, ok := strings.CutPrefix(s.Ref, "#/$defs/"); ok {
		if seen[t] {
			return
		}
		seen[t] = true
		s = defs[name]
		if s == nil {
			return
		}
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		allowNulls(s.Items, t.Elem(), defs, seen)
	case reflect.Map:
		allowNulls(s.AdditionalProperties, t.Elem(), defs, seen)
	case reflect.Struct:
		if s.Properties == nil {
			return
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" && opts == "" {
				continue
			}
			if f.Anonymous && name == "" {
				allowNulls(s, f.Type, defs, seen) // embedded: its fields are this struct's
				continue
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			ps, ok := s.Properties.Get(name)
			if !ok || ps == nil {
				continue
			}
			allowNulls(ps, f.Type, defs, seen)
			switch f.Type.Kind() {
			case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface:
				if !strings.Contains(opts, "omitempty") && ps.Type != "null" {
					s.Properties.Set(name, &jsonschema.Schema{AnyOf: []*jsonschema.Schema{ps, {Type: "null"}}})
				}
			}
		}
	}
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
