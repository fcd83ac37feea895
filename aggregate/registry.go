package aggregate

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"sync"

	"github.com/esraft/esraft/eventstore"
)

// Codec turns event payloads and snapshot states into bytes and back.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default codec (encoding/json).
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// revisionHeader is the event metadata header holding the revision of the
// event's shape; absent means revision 1.
const revisionHeader = "esraft.revision"

// Registry maps event type names to Go types and back, and turns stored
// events of old shapes or names into current ones (upcasting). Every
// aggregate Type has one (Type.Registry); projections can use it, or a
// shared one given to several types with WithRegistry, to decode events.
// It is safe for concurrent use.
type Registry struct {
	codec  Codec
	mu     sync.RWMutex
	byName map[string]*eventType
	byType map[reflect.Type]*eventType
	up     map[upKey]*upcaster
	byIn   map[reflect.Type][]upKey // upcasters by the Go type they read
}

type eventType struct {
	name   string
	goType reflect.Type
	rev    int
	decode func(c Codec, data []byte) (any, error)
}

type upKey struct {
	name string
	rev  int
}

type upcaster struct {
	in    reflect.Type
	apply func(c Codec, data []byte, v any) (any, error)
}

// NewRegistry returns an empty registry using codec (nil: JSON).
func NewRegistry(codec Codec) *Registry {
	if codec == nil {
		codec = JSON
	}
	return &Registry{
		codec:  codec,
		byName: make(map[string]*eventType),
		byType: make(map[reflect.Type]*eventType),
		up:     make(map[upKey]*upcaster),
		byIn:   make(map[reflect.Type][]upKey),
	}
}

// Codec returns the registry's codec.
func (r *Registry) Codec() Codec { return r.codec }

// EventOption adjusts the registration of one event type.
type EventOption interface{ applyEvent(*eventType) }

type eventOptionFunc func(*eventType)

func (f eventOptionFunc) applyEvent(e *eventType) { f(e) }

// Revision declares the current revision of an event's shape (default 1).
// Events are stored with their revision; events stored at an older
// revision are read through the upcasters registered with Upcast.
func Revision(rev int) EventOption {
	if rev < 1 {
		panic(fmt.Sprintf("aggregate: revision %d < 1", rev))
	}
	return eventOptionFunc(func(e *eventType) { e.rev = rev })
}

// Register maps the event type name to the Go type E (a value type, not
// a pointer) in r. A name or Go type maps to one counterpart only:
// registering a different pairing panics, as a conflicting registration is
// a programming error; registering the same pairing again is a no-op.
func Register[E any](r *Registry, name string, opts ...EventOption) {
	t := reflect.TypeFor[E]()
	if name == "" {
		panic("aggregate: Register with an empty event name")
	}
	if t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface {
		panic(fmt.Sprintf("aggregate: register event %q as a value type, not %v", name, t))
	}
	et := &eventType{name: name, goType: t, rev: 1, decode: func(c Codec, data []byte) (any, error) {
		var e E
		if err := c.Unmarshal(data, &e); err != nil {
			return nil, err
		}
		return e, nil
	}}
	for _, o := range opts {
		o.applyEvent(et)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.byName[name]; old != nil {
		if old.goType != t || old.rev != et.rev {
			panic(fmt.Sprintf("aggregate: event %q registered twice: as %v revision %d and as %v revision %d", name, old.goType, old.rev, t, et.rev))
		}
		return
	}
	if old := r.byType[t]; old != nil {
		panic(fmt.Sprintf("aggregate: Go type %v registered twice: as %q and as %q", t, old.name, name))
	}
	r.byName[name], r.byType[t] = et, et
}

// Upcast registers fn to read events stored under name at revision rev,
// in the shape Old, as the shape New. Upcasters chain until a registered
// event type comes out, which is the event read:
//
//   - if New is a registered event type, the chain ends there (so an
//     upcaster from an old name to a registered type is a rename);
//   - otherwise the next step is the upcaster of name at revision rev+1 if
//     it reads New, else the only upcaster that reads New, whatever its
//     name (a rename into an intermediate shape); no such upcaster, or
//     several, is a decoding error.
//
// fn must be a pure function of its input.
//
// Old is decoded from the stored bytes with the registry's codec, so keep
// the old shape as a type of its own (DepositedV1) when the current type
// changes. Registering two upcasters for the same name and revision
// panics.
func Upcast[Old, New any](r *Registry, name string, rev int, fn func(Old) New) {
	if name == "" || rev < 1 || fn == nil {
		panic("aggregate: Upcast needs a name, a revision >= 1 and a function")
	}
	u := &upcaster{in: reflect.TypeFor[Old](), apply: func(c Codec, data []byte, v any) (any, error) {
		var old Old
		if v != nil {
			o, ok := v.(Old)
			if !ok {
				return nil, fmt.Errorf("upcaster of %q revision %d takes %v, the previous step gave %T", name, rev, reflect.TypeFor[Old](), v)
			}
			old = o
		} else if err := c.Unmarshal(data, &old); err != nil {
			return nil, err
		}
		return fn(old), nil
	}}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := upKey{name, rev}
	if r.up[k] != nil {
		panic(fmt.Sprintf("aggregate: two upcasters for %q revision %d", name, rev))
	}
	r.up[k] = u
	r.byIn[u.in] = append(r.byIn[u.in], k)
}

// Name returns the registered event type name of e (a value or a pointer
// to one) and whether it is registered.
func (r *Registry) Name(e any) (string, bool) {
	et := r.typeOf(e)
	if et == nil {
		return "", false
	}
	return et.name, true
}

func (r *Registry) typeOf(e any) *eventType {
	t := reflect.TypeOf(e)
	if t == nil {
		return nil
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byType[t]
}

// encode returns the stored form of event e and e as a value (not a
// pointer).
func (r *Registry) encode(e any) (eventstore.EventData, any, error) {
	et := r.typeOf(e)
	if et == nil {
		return eventstore.EventData{}, nil, fmt.Errorf("%w: %T (register it with On or Register)", ErrUnregisteredEvent, e)
	}
	if v := reflect.ValueOf(e); v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return eventstore.EventData{}, nil, fmt.Errorf("aggregate: nil %T event", e)
		}
		e = v.Elem().Interface()
	}
	data, err := r.codec.Marshal(e)
	if err != nil {
		return eventstore.EventData{}, nil, fmt.Errorf("aggregate: encode %q: %w", et.name, err)
	}
	ed := eventstore.EventData{Type: et.name, Data: data}
	if et.rev != 1 {
		ed.Metadata.Headers = map[string]string{revisionHeader: strconv.Itoa(et.rev)}
	}
	return ed, e, nil
}

// Decode returns the event's payload as its current registered Go type (a
// value, not a pointer), upcasting it from the shape and name it was
// stored in. An unregistered type name is a *UnknownEventError.
func (r *Registry) Decode(ev eventstore.Event) (any, error) {
	_, v, err := r.decode(&ev)
	return v, err
}

// maxUpcastSteps bounds an upcaster chain, so that a cycle of renames is
// an error and not a hang.
const maxUpcastSteps = 64

func (r *Registry) decode(ev *eventstore.Event) (string, any, error) {
	name, rev := ev.Type, 1
	if s, ok := ev.Metadata.Headers[revisionHeader]; ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return "", nil, fmt.Errorf("%w: %s version %d: bad revision header %q", ErrUndecodable, ev.Stream, ev.Version, s)
		}
		rev = n
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	var v any // the upcast value so far; nil while still ev.Data
	for step := 0; step < maxUpcastSteps; step++ {
		et := r.byName[name]
		if et != nil && et.rev == rev && v == nil {
			e, err := et.decode(r.codec, ev.Data)
			if err != nil {
				return "", nil, fmt.Errorf("%w: %q at %s version %d: %w", ErrUndecodable, name, ev.Stream, ev.Version, err)
			}
			return name, e, nil
		}
		u := r.up[upKey{name, rev}]
		switch {
		case u == nil && et == nil:
			return "", nil, &UnknownEventError{Type: name, Revision: rev, Stream: ev.Stream, Version: ev.Version}
		case u == nil:
			return "", nil, fmt.Errorf("%w: %q at %s version %d is revision %d, the registered type %v is revision %d and no upcaster reads revision %d",
				ErrUndecodable, name, ev.Stream, ev.Version, rev, et.goType, et.rev, rev)
		}
		out, err := u.apply(r.codec, ev.Data, v)
		if err != nil {
			return "", nil, fmt.Errorf("%w: upcasting %q revision %d at %s version %d: %w", ErrUndecodable, name, rev, ev.Stream, ev.Version, err)
		}
		ot := reflect.TypeOf(out)
		if et := r.byType[ot]; et != nil {
			return et.name, out, nil
		}
		next, err := r.nextUpcastLocked(upKey{name, rev + 1}, ot)
		if err != nil {
			return "", nil, fmt.Errorf("%w: upcasting %q revision %d at %s version %d: %w", ErrUndecodable, name, rev, ev.Stream, ev.Version, err)
		}
		v, name, rev = out, next.name, next.rev
	}
	return "", nil, fmt.Errorf("%w: %q at %s version %d: more than %d upcasting steps", ErrUndecodable, ev.Type, ev.Stream, ev.Version, maxUpcastSteps)
}

// nextUpcastLocked returns the upcaster reading an intermediate value of
// Go type t: next (same name, next revision) if it reads t, else the only
// upcaster that does.
func (r *Registry) nextUpcastLocked(next upKey, t reflect.Type) (upKey, error) {
	if u := r.up[next]; u != nil && u.in == t {
		return next, nil
	}
	switch ks := r.byIn[t]; len(ks) {
	case 1:
		return ks[0], nil
	case 0:
		return upKey{}, fmt.Errorf("it gives %v, which is neither a registered event type nor read by an upcaster (no upcaster for %q revision %d)", t, next.name, next.rev)
	default:
		return upKey{}, fmt.Errorf("it gives %v, which several upcasters read (%v)", t, ks)
	}
}
