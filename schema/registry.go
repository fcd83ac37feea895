package schema

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/esraft/esraft/eventstore"
)

// Stream is the system stream that holds the registry.
const Stream = "$schemas"

// Types of the events in Stream.
const (
	eventRegistered    = "SchemaRegistered"
	eventCompatibility = "CompatibilitySet"
	eventValidation    = "ValidationModeSet"
)

// maxSubjectBytes bounds a subject's name, as Confluent's registry does.
const maxSubjectBytes = 255

// maxAttempts bounds how often a change is re-checked after losing a race
// with another change of the registry.
const maxAttempts = 20

// Version is a registered schema version.
type Version struct {
	Subject string
	// Version numbers the subject's schemas from 1.
	Version int
	// ID identifies the registration across subjects (Confluent's schema
	// ID): the position of its event in the registry's stream.
	ID     int
	Schema *Schema
}

// Stored event payloads. Field names are snake_case like every JSON we
// write.
type registered struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
	Schema  string `json:"schema"`
}

type compatibilitySet struct {
	Subject       string        `json:"subject"` // "": the default of every subject
	Compatibility Compatibility `json:"compatibility"`
}

type validationSet struct {
	Category string         `json:"category"` // "": the default of every category
	Mode     ValidationMode `json:"mode"`
}

// Registry is a node's view of the schema registry kept in the store's
// Stream, and the validator of the appends this node receives. It is
// safe for concurrent use.
type Registry struct {
	store  *eventstore.Store
	logger *slog.Logger

	mu   sync.RWMutex
	view view
	// changed is closed and replaced whenever the view moves on.
	changed chan struct{}

	catchMu sync.Mutex // one reader of Stream at a time

	stats stats

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

type view struct {
	applied           uint64 // the version of Stream the view includes
	subjects          map[string]*subject
	byID              map[int]*Version
	compatibility     Compatibility // "" : DefaultCompatibility
	validation        map[string]ValidationMode
	defaultValidation ValidationMode // "": ValidationRegistered
}

type subject struct {
	versions      []*Version
	compatibility Compatibility // "": the registry's default
}

// Option configures Open.
type Option interface{ apply(*Registry) }

type optionFunc func(*Registry)

func (f optionFunc) apply(r *Registry) { f(r) }

// Logger sets the registry's logger (default, or nil: the store's).
func Logger(l *slog.Logger) Option {
	return optionFunc(func(r *Registry) {
		if l != nil {
			r.logger = l
		}
	})
}

// Open reads the registry from store's Stream into this node's view,
// keeps the view following the stream, and makes the registry the store's
// validator (eventstore.Store.SetValidator). Close it before the store.
func Open(ctx context.Context, store *eventstore.Store, opts ...Option) (*Registry, error) {
	r := &Registry{
		store:   store,
		logger:  store.Logger(),
		changed: make(chan struct{}),
		view:    view{subjects: map[string]*subject{}, byID: map[int]*Version{}, validation: map[string]ValidationMode{}},
		done:    make(chan struct{}),
	}
	for _, o := range opts {
		o.apply(r)
	}
	if err := r.catchUp(ctx); err != nil {
		return nil, err
	}
	fctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.follow(fctx)
	store.SetValidator(r)
	return r, nil
}

// Close stops validation on the store and stops following the stream. It
// is idempotent.
func (r *Registry) Close() error {
	r.once.Do(func() {
		r.store.SetValidator(nil)
		r.cancel()
		<-r.done
	})
	return nil
}

// follow applies the registry's new events as this node applies them: it
// is woken by the apply path of the stream's partition.
func (r *Registry) follow(ctx context.Context) {
	defer close(r.done)
	p := r.store.PartitionOf(Stream)
	for {
		head, err := r.store.Head(p)
		if err == nil {
			err = r.catchUp(ctx)
		}
		if err == nil {
			err = r.store.Log().Wait(ctx, p, head)
		}
		switch {
		case ctx.Err() != nil || errors.Is(err, eventstore.ErrClosed):
			return
		case err != nil:
			r.logger.Warn("schema: following the registry stream failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// catchUp applies the events of Stream this node has applied and the view
// has not.
func (r *Registry) catchUp(ctx context.Context) error {
	r.catchMu.Lock()
	defer r.catchMu.Unlock()
	for {
		r.mu.RLock()
		from := r.view.applied + 1
		r.mu.RUnlock()
		// The follower is woken by every apply of the stream's partition:
		// look at the stream's version first, which is cheaper than a read.
		info, err := r.store.Stream(ctx, Stream)
		if err != nil {
			return fmt.Errorf("schema: read %s: %w", Stream, err)
		}
		if info.Version < from {
			return nil
		}
		evs, err := r.store.ReadStream(ctx, Stream, from, 256)
		if err != nil {
			return fmt.Errorf("schema: read %s: %w", Stream, err)
		}
		if len(evs) == 0 {
			return nil
		}
		// Compile outside the lock: validation goes on meanwhile.
		parsed := make([]*Schema, len(evs))
		for i, ev := range evs {
			if ev.Type == eventRegistered {
				var reg registered
				if json.Unmarshal(ev.Data, &reg) == nil {
					parsed[i], _ = Parse([]byte(reg.Schema))
				}
			}
		}
		r.mu.Lock()
		for i := range evs {
			r.applyLocked(&evs[i], parsed[i])
		}
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	}
}

// applyLocked applies one event of Stream. It depends on the event and
// the view only, so every node builds the same view; an event that does
// not make sense (written to Stream by something else than a Registry) is
// skipped, the same way everywhere.
func (r *Registry) applyLocked(ev *eventstore.Event, sch *Schema) {
	v := &r.view
	v.applied = ev.Version
	skip := func(why string) {
		r.logger.Warn("schema: skipping an event of the registry stream", "version", ev.Version, "type", ev.Type, "why", why)
	}
	switch ev.Type {
	case eventRegistered:
		var reg registered
		if err := json.Unmarshal(ev.Data, &reg); err != nil || sch == nil || checkSubject(reg.Subject) != nil {
			skip("not a valid registration")
			return
		}
		s := v.subject(reg.Subject)
		if reg.Version != len(s.versions)+1 {
			skip(fmt.Sprintf("version %d does not follow %d", reg.Version, len(s.versions)))
			return
		}
		ver := &Version{Subject: reg.Subject, Version: reg.Version, ID: int(ev.Version), Schema: sch}
		s.versions = append(s.versions, ver)
		v.byID[ver.ID] = ver
	case eventCompatibility:
		var cs compatibilitySet
		if err := json.Unmarshal(ev.Data, &cs); err != nil {
			skip("undecodable")
			return
		}
		if _, err := ParseCompatibility(string(cs.Compatibility)); err != nil {
			skip(err.Error())
			return
		}
		if cs.Subject == "" {
			v.compatibility = cs.Compatibility
			return
		}
		v.subject(cs.Subject).compatibility = cs.Compatibility
	case eventValidation:
		var vs validationSet
		if err := json.Unmarshal(ev.Data, &vs); err != nil {
			skip("undecodable")
			return
		}
		if _, err := ParseValidationMode(string(vs.Mode)); err != nil {
			skip(err.Error())
			return
		}
		if vs.Category == "" {
			v.defaultValidation = vs.Mode
		} else {
			v.validation[vs.Category] = vs.Mode
		}
	default:
		skip("unknown event type")
	}
}

// subject returns the view's subject name, created empty if new.
func (v *view) subject(name string) *subject {
	s := v.subjects[name]
	if s == nil {
		s = &subject{}
		v.subjects[name] = s
	}
	return s
}

// Sync waits until this node's view includes every registry change
// acknowledged anywhere before the call (a read barrier, then the view
// catches up).
func (r *Registry) Sync(ctx context.Context) error {
	if err := r.store.Barrier(ctx); err != nil {
		return fmt.Errorf("schema: sync: %w", err)
	}
	return r.catchUp(ctx)
}

// Applied returns the version of Stream this node's view includes: two
// nodes whose views are at the same version hold the same registry.
func (r *Registry) Applied() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.view.applied
}

func checkSubject(s string) error {
	if s == "" || len(s) > maxSubjectBytes || !utf8.ValidString(s) {
		return fmt.Errorf("%w: %q (1 to %d bytes of UTF-8)", ErrInvalidSubject, s, maxSubjectBytes)
	}
	return nil
}

// Register registers schema text as the next version of subject, unless
// it breaks the subject's compatibility mode against the earlier versions
// (an *IncompatibleError listing every incompatibility) or is not a JSON
// Schema (ErrInvalidSchema). If the subject already has a version with the
// same schema, that version is returned and nothing is appended. The
// registration is appended only if no other registry change came between
// the check and the append; otherwise the check runs again.
func (r *Registry) Register(ctx context.Context, subj string, text []byte) (Version, error) {
	if err := checkSubject(subj); err != nil {
		return Version{}, err
	}
	sch, err := Parse(text)
	if err != nil {
		return Version{}, err
	}
	id := uuid.New() // one ID for every attempt: a retried append is not doubled
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := r.Sync(ctx); err != nil {
			return Version{}, err
		}
		r.mu.RLock()
		applied := r.view.applied
		s := r.view.subjects[subj]
		mode := r.view.compatibilityOf(subj)
		var earlier []*Schema
		if s != nil {
			for _, v := range s.versions {
				if v.Schema.Equal(sch) {
					out := *v
					r.mu.RUnlock()
					return out, nil
				}
				earlier = append(earlier, v.Schema)
			}
		}
		r.mu.RUnlock()
		if ins := CheckCompatibility(mode, sch, earlier); len(ins) > 0 {
			return Version{}, &IncompatibleError{Subject: subj, Mode: mode, Incompatibilities: ins}
		}
		data, err := json.Marshal(registered{Subject: subj, Version: len(earlier) + 1, Schema: sch.String()})
		if err != nil {
			return Version{}, err
		}
		_, err = r.store.Append(ctx, Stream, eventstore.Exact(applied), []eventstore.EventData{{ID: id, Type: eventRegistered, Data: data}})
		switch {
		case err == nil, errors.Is(err, eventstore.ErrWrongVersion), errors.Is(err, eventstore.ErrUnknownOutcome):
			// Appended, or not: the next round's view says which.
			if err == nil {
				id = uuid.New()
			}
			continue
		case errors.Is(err, eventstore.ErrEventIDConflict):
			// This ID was appended by an earlier attempt at another
			// version: the next round finds it.
			id = uuid.New()
			continue
		default:
			return Version{}, fmt.Errorf("schema: register %q: %w", subj, err)
		}
	}
	return Version{}, fmt.Errorf("%w: registering %q", ErrConflict, subj)
}

func (v *view) compatibilityOf(subj string) Compatibility {
	if s := v.subjects[subj]; s != nil && s.compatibility != "" {
		return s.compatibility
	}
	if v.compatibility != "" {
		return v.compatibility
	}
	return DefaultCompatibility
}

// SetCompatibility sets subject's compatibility mode ("" subject: the
// default of every subject without a mode of its own).
func (r *Registry) SetCompatibility(ctx context.Context, subj string, mode Compatibility) error {
	if subj != "" {
		if err := checkSubject(subj); err != nil {
			return err
		}
	}
	if _, err := ParseCompatibility(string(mode)); err != nil {
		return err
	}
	return r.change(ctx, eventCompatibility, compatibilitySet{Subject: subj, Compatibility: mode})
}

// SetValidationMode sets how appends to streams of category are validated
// ("" category: the default of every category without a mode of its own).
func (r *Registry) SetValidationMode(ctx context.Context, category string, mode ValidationMode) error {
	if _, err := ParseValidationMode(string(mode)); err != nil {
		return err
	}
	return r.change(ctx, eventValidation, validationSet{Category: category, Mode: mode})
}

// change appends a setting and waits until this node's view includes it.
func (r *Registry) change(ctx context.Context, typ string, payload any) error {
	data, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	res, err := r.store.Append(ctx, Stream, eventstore.Any, []eventstore.EventData{{ID: uuid.New(), Type: typ, Data: data}})
	if err != nil {
		return fmt.Errorf("schema: %s: %w", typ, err)
	}
	return r.waitApplied(ctx, res.LastVersion)
}

// waitApplied waits until the view includes version v of Stream.
func (r *Registry) waitApplied(ctx context.Context, v uint64) error {
	for {
		r.mu.RLock()
		applied, ch := r.view.applied, r.changed
		r.mu.RUnlock()
		if applied >= v {
			return nil
		}
		if err := r.catchUp(ctx); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-r.done:
			return ErrClosed
		}
	}
}

// Subjects returns the subjects with at least one version, sorted.
func (r *Registry) Subjects() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.view.subjects))
	for name, s := range r.view.subjects {
		if len(s.versions) > 0 {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// Versions returns the version numbers of subject (ErrSubjectNotFound if
// it has none).
func (r *Registry) Versions(subj string) ([]int, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.view.subjects[subj]
	if s == nil || len(s.versions) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrSubjectNotFound, subj)
	}
	out := make([]int, len(s.versions))
	for i, v := range s.versions {
		out[i] = v.Version
	}
	return out, nil
}

// Latest is the version number that means "the latest version" to Get.
const Latest = -1

// Get returns version v of subject (Latest: the latest one).
func (r *Registry) Get(subj string, v int) (Version, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ver, err := r.view.get(subj, v)
	if err != nil {
		return Version{}, err
	}
	return *ver, nil
}

func (v *view) get(subj string, n int) (*Version, error) {
	s := v.subjects[subj]
	if s == nil || len(s.versions) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrSubjectNotFound, subj)
	}
	if n == Latest {
		return s.versions[len(s.versions)-1], nil
	}
	if n < 1 || n > len(s.versions) {
		return nil, fmt.Errorf("%w: %q version %d", ErrVersionNotFound, subj, n)
	}
	return s.versions[n-1], nil
}

// Find returns the version of subject whose schema is the same JSON
// document as text (ErrSchemaNotFound if none).
func (r *Registry) Find(subj string, text []byte) (Version, error) {
	sch, err := Parse(text)
	if err != nil {
		return Version{}, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.view.subjects[subj]
	if s == nil || len(s.versions) == 0 {
		return Version{}, fmt.Errorf("%w: %q", ErrSubjectNotFound, subj)
	}
	for _, v := range s.versions {
		if v.Schema.Equal(sch) {
			return *v, nil
		}
	}
	return Version{}, fmt.Errorf("%w: under %q", ErrSchemaNotFound, subj)
}

// ByID returns the registration with schema ID id.
func (r *Registry) ByID(id int) (Version, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v := r.view.byID[id]
	if v == nil {
		return Version{}, fmt.Errorf("%w: id %d", ErrSchemaNotFound, id)
	}
	return *v, nil
}

// Compatibility returns subject's compatibility mode ("" subject: the
// default) and whether it was set explicitly.
func (r *Registry) Compatibility(subj string) (Compatibility, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if subj == "" {
		if r.view.compatibility == "" {
			return DefaultCompatibility, false
		}
		return r.view.compatibility, true
	}
	s := r.view.subjects[subj]
	return r.view.compatibilityOf(subj), s != nil && s.compatibility != ""
}

// Check returns the incompatibilities of text with version v of subject
// (Latest: the latest) under the subject's mode, checked against that one
// version, without registering anything.
func (r *Registry) Check(subj string, v int, text []byte) ([]Incompatibility, error) {
	sch, err := Parse(text)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	ver, err := r.view.get(subj, v)
	mode := r.view.compatibilityOf(subj)
	r.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	earlier := make([]*Schema, ver.Version)
	earlier[ver.Version-1] = ver.Schema
	return CheckCompatibility(intransitive(mode), sch, earlier), nil
}

func intransitive(m Compatibility) Compatibility {
	switch m {
	case BackwardTransitive:
		return Backward
	case ForwardTransitive:
		return Forward
	case FullTransitive:
		return Full
	}
	return m
}

// RegisterSchema is Register returning the version number only (for
// aggregate.Schemas).
func (r *Registry) RegisterSchema(ctx context.Context, subj string, text []byte) (int, error) {
	v, err := r.Register(ctx, subj, text)
	return v.Version, err
}
