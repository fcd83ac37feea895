package aggregate

import (
	"fmt"
	"strings"
	"sync/atomic"
)

// Type describes an aggregate type: its state S, the category of its
// streams, the events that change it and its snapshot policy. Declare it
// once (usually as a package variable), register its events with On, then
// give it to NewRepository; a Type is frozen once a repository uses it.
type Type[S any] struct {
	category  string
	reg       *Registry
	apply     map[string]func(*S, any)
	snapEvery int
	snapRev   int
	frozen    atomic.Bool
}

// TypeOption configures NewType.
type TypeOption interface{ applyType(*typeConfig) }

type typeConfig struct {
	reg       *Registry
	snapEvery int
	snapRev   int
}

type typeOptionFunc func(*typeConfig)

func (f typeOptionFunc) applyType(c *typeConfig) { f(c) }

// SnapshotEvery makes the repository store a snapshot of the state after
// a save once n or more events were applied since the snapshot it loaded
// (or since the beginning). 0 (the default) disables snapshots, and then
// loads do not look for them either. The state is encoded with the
// registry's codec; with JSON, NewRepository panics if S has unexported
// fields and no MarshalJSON, since its snapshots would lose them.
func SnapshotEvery(n int) TypeOption {
	if n < 0 {
		panic("aggregate: SnapshotEvery < 0")
	}
	return typeOptionFunc(func(c *typeConfig) { c.snapEvery = n })
}

// SnapshotRevision tags snapshots with the revision of the state's shape
// (default 1). Raise it whenever S or its handlers change in a way that
// makes old snapshots wrong: snapshots of any other revision are ignored
// and the aggregate is rebuilt from its events (and snapshotted again at
// the new revision on its next save).
func SnapshotRevision(rev int) TypeOption {
	if rev < 1 {
		panic("aggregate: SnapshotRevision < 1")
	}
	return typeOptionFunc(func(c *typeConfig) { c.snapRev = rev })
}

// WithRegistry makes the type register its events in r (shared with other
// types or with projections) instead of a registry of its own.
func WithRegistry(r *Registry) TypeOption {
	return typeOptionFunc(func(c *typeConfig) { c.reg = r })
}

// NewType returns the aggregate type whose streams are named
// category + "-" + id ("account-42"). category must be non-empty and
// contain no '-', so that eventstore.Category recovers it from a stream
// name.
func NewType[S any](category string, opts ...TypeOption) *Type[S] {
	if category == "" || strings.ContainsRune(category, '-') {
		panic(fmt.Sprintf("aggregate: category %q must be non-empty and contain no '-'", category))
	}
	c := typeConfig{snapRev: 1}
	for _, o := range opts {
		o.applyType(&c)
	}
	if c.reg == nil {
		c.reg = NewRegistry(nil)
	}
	return &Type[S]{category: category, reg: c.reg, apply: make(map[string]func(*S, any)), snapEvery: c.snapEvery, snapRev: c.snapRev}
}

// On registers the event type name for the Go type E in t's registry and
// handle as the way an E changes the state. handle must only mutate the
// state: it is called when events are loaded and after they are saved,
// never to decide anything. Calling On after t is in use, or twice for
// one name, panics.
func On[S, E any](t *Type[S], name string, handle func(state *S, event E), opts ...EventOption) {
	if t.frozen.Load() {
		panic(fmt.Sprintf("aggregate: On(%q) after type %q is in use by a repository", name, t.category))
	}
	if handle == nil {
		panic("aggregate: On with a nil handler")
	}
	if _, dup := t.apply[name]; dup {
		panic(fmt.Sprintf("aggregate: two handlers for event %q of type %q", name, t.category))
	}
	Register[E](t.reg, name, opts...)
	t.apply[name] = func(s *S, e any) { handle(s, e.(E)) }
}

// Category returns the category of the type's streams.
func (t *Type[S]) Category() string { return t.category }

// Registry returns the registry holding the type's events, for Upcast and
// for decoding its events elsewhere.
func (t *Type[S]) Registry() *Registry { return t.reg }

// Stream returns the name of the stream holding the events of aggregate id.
func (t *Type[S]) Stream(id string) string { return t.category + "-" + id }

// SnapshotStream returns the name of the stream holding the snapshots of
// aggregate id: "$snapshot-" + Stream(id), so their category is
// "$snapshot" and subscriptions filtering by category never see them.
func (t *Type[S]) SnapshotStream(id string) string { return snapshotPrefix + t.Stream(id) }

const snapshotPrefix = "$snapshot-"
