package eventstore

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/esraft/esraft/raftlog"
)

// Checkpoint is a subscription's position: for each partition, the offset
// of the next event to deliver. Store it with what you derived from the
// events and pass it back as SubscribeOptions.From to resume.
type Checkpoint map[Partition]uint64

// SubscribeOptions choose what a subscription delivers.
type SubscribeOptions struct {
	// From is where to start in each partition; partitions missing from it
	// start at offset 0 (the beginning of history).
	From Checkpoint
	// FromNow starts every partition at its current end on this node,
	// ignoring From: only events applied after Subscribe are delivered.
	FromNow bool
	// FromTime, if set, starts every partition at its first event stamped
	// at or after FromTime (see Store.OffsetAt), ignoring From. It cannot
	// be combined with FromNow.
	FromTime time.Time
	// Partitions restricts the subscription to these partitions (default
	// all).
	Partitions []Partition
	// Streams and Categories, if either is set, deliver only events of
	// these streams (exact names) or of streams in these categories (see
	// InCategory: a category may contain '-'): an event is delivered if
	// its stream matches either.
	Streams    []string
	Categories []string
	// EventTypes, if set, delivers only events of these types (and, with
	// Streams or Categories, of the streams they select).
	EventTypes []string
	// IncludeSystemStreams also delivers events of streams whose name
	// starts with '$' (the framework's own: aggregate snapshots, ...),
	// which are skipped by default.
	IncludeSystemStreams bool
	// BatchSize is how many events are read at once per partition (default
	// 1,024).
	BatchSize int
}

// Subscription delivers the events of one or more partitions: first the
// history from its starting position (catch-up), then new events as this
// node applies them (live), with no gap and no duplicate between the two,
// since both are the same read of the partition. Each partition's events
// come in offset order; partitions are interleaved. Filters run where the
// events are read, on the node's replica, before an event is built: events
// filtered out are never built nor delivered, and the checkpoint moves past
// them.
//
// A Subscription is used by one goroutine. It reads this node's replica,
// so it keeps delivering whatever node leads the log.
type Subscription struct {
	store  *Store
	cancel context.CancelFunc
	wg     sync.WaitGroup
	feed   chan batch
	done   chan struct{} // closed when every reader has stopped
	closed chan struct{} // closed by Close
	once   sync.Once

	cur        batch
	pos        int
	checkpoint Checkpoint
	errOnce    sync.Once
	err        error
}

// batch is what a partition reader hands over: events to deliver, and the
// offset to continue from once they are delivered.
type batch struct {
	partition Partition
	events    []Event
	next      uint64
	err       error
}

// Subscribe starts a subscription; Close it when done. Errors: an unknown
// partition in opt; ErrClosed.
func (s *Store) Subscribe(ctx context.Context, opt SubscribeOptions) (*Subscription, error) {
	parts := opt.Partitions
	if len(parts) == 0 {
		parts = make([]Partition, s.Partitions())
		for p := range parts {
			parts[p] = Partition(p)
		}
	}
	if opt.FromNow && !opt.FromTime.IsZero() {
		return nil, fmt.Errorf("%w: FromNow and FromTime are exclusive", ErrInvalidOptions)
	}
	start := make(Checkpoint, len(parts))
	for _, p := range parts {
		if p < 0 || int(p) >= s.Partitions() {
			return nil, fmt.Errorf("%w: %d", ErrUnknownPartition, p)
		}
		if !opt.FromTime.IsZero() {
			off, err := s.OffsetAt(ctx, p, opt.FromTime)
			if err != nil {
				return nil, err
			}
			start[p] = off
		} else if opt.FromNow {
			head, err := s.log.NextOffset(p)
			if err != nil {
				return nil, s.readErr(err)
			}
			start[p] = head
		} else {
			start[p] = opt.From[p]
		}
	}
	if opt.BatchSize <= 0 {
		opt.BatchSize = 1024
	}
	f := newFilter(opt)
	ctx, cancel := context.WithCancel(ctx)
	sub := &Subscription{
		store: s, cancel: cancel, feed: make(chan batch, 2*len(parts)), done: make(chan struct{}), closed: make(chan struct{}),
		checkpoint: maps.Clone(start),
	}
	for _, p := range parts {
		sub.wg.Add(1)
		go sub.read(ctx, p, start[p], opt.BatchSize, f)
	}
	go func() {
		sub.wg.Wait()
		close(sub.done)
	}()
	return sub, nil
}

// filter selects events by stream, category and type on the raw record.
type filter struct {
	system     bool
	streams    map[string]struct{} // nil: any stream
	categories map[string]struct{}
	types      map[string]struct{}
}

func newFilter(opt SubscribeOptions) filter {
	f := filter{system: opt.IncludeSystemStreams}
	if len(opt.Streams)+len(opt.Categories) > 0 {
		f.streams = set(opt.Streams)
		f.categories = set(opt.Categories)
	}
	if len(opt.EventTypes) > 0 {
		f.types = set(opt.EventTypes)
	}
	return f
}

func set(names []string) map[string]struct{} {
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		m[n] = struct{}{}
	}
	return m
}

// selects reports whether the filter's streams or categories hold stream:
// the stream itself, or its name up to any of its '-'.
func (f filter) selects(stream string) bool {
	if _, ok := f.streams[stream]; ok {
		return true
	}
	if _, ok := f.categories[stream]; ok {
		return true
	}
	for i := 0; i < len(stream); i++ {
		if stream[i] == '-' {
			if _, ok := f.categories[stream[:i]]; ok {
				return true
			}
		}
	}
	return false
}

func (f filter) match(r *raftlog.Record) bool {
	if !f.system && IsSystemStream(r.Key) {
		return false
	}
	if f.streams != nil && !f.selects(r.Key) {
		return false
	}
	if f.types != nil {
		if _, ok := f.types[string(recordType(r))]; !ok {
			return false
		}
	}
	return true
}

// read is the reader of partition p: it reads from offset from, hands
// batches over, and waits on the apply path when it has read everything.
func (sub *Subscription) read(ctx context.Context, p Partition, from uint64, size int, f filter) {
	defer sub.wg.Done()
	l := sub.store.log
	send := func(b batch) bool {
		select {
		case sub.feed <- b:
			return true
		case <-ctx.Done():
			return false
		}
	}
	fail := func(err error) {
		sub.store.readerFailed(p, err)
		send(batch{partition: p, err: err})
	}
	for {
		head, err := l.NextOffset(p)
		if err != nil {
			fail(sub.store.readErr(err))
			return
		}
		var recs []raftlog.Record
		if from < head {
			recs, err = l.Read(ctx, p, from, raftlog.ReadOptions{MaxRecords: size})
			if err != nil {
				fail(sub.store.readErr(err))
				return
			}
		}
		if len(recs) == 0 {
			from = max(from, head)
			if err := l.Wait(ctx, p, from); err != nil {
				if ctx.Err() == nil {
					fail(sub.store.readErr(err))
				}
				return
			}
			continue
		}
		b := batch{partition: p, next: recs[len(recs)-1].Offset + 1}
		b.events = make([]Event, 0, len(recs))
		for i := range recs {
			if !f.match(&recs[i]) {
				continue
			}
			ev, err := fromRecord(&recs[i])
			if err != nil {
				fail(err)
				return
			}
			b.events = append(b.events, ev)
		}
		if err := sub.store.decrypt(ctx, b.events); err != nil {
			fail(err)
			return
		}
		if !send(b) {
			return
		}
		from = b.next
	}
}

// readerFailed logs the error that ended partition p's reader: the
// subscriber is told only the first reader's error.
func (s *Store) readerFailed(p Partition, err error) {
	level := slog.LevelWarn
	if errors.Is(err, ErrClosed) {
		level = slog.LevelDebug
	}
	s.logger.Log(context.Background(), level, "eventstore: subscription reader stopped", "partition", p, "err", err)
}

// Next returns the next event, waiting for one to be applied if the
// subscription has caught up. It returns ctx's error when ctx ends, and
// the subscription's error (ErrClosed once the store closes) after a
// reader failed; either way the subscription can be closed.
func (sub *Subscription) Next(ctx context.Context) (Event, error) {
	for {
		moved, err := sub.fill(ctx)
		if err != nil {
			return Event{}, err
		}
		if moved < 0 {
			break
		}
	}
	return sub.take(1)[0], nil
}

// take hands over the next n events of the current batch (which holds
// them) and moves the checkpoint past them: to the batch's end once it is
// exhausted, which also covers filtered-out events read with it.
func (sub *Subscription) take(n int) []Event {
	evs := sub.cur.events[sub.pos : sub.pos+n : sub.pos+n]
	sub.pos += n
	if sub.pos == len(sub.cur.events) {
		sub.checkpoint[sub.cur.partition] = sub.cur.next
	} else {
		sub.checkpoint[sub.cur.partition] = evs[n-1].Offset + 1
	}
	return evs
}

// fill makes sure the current batch has an event to deliver, waiting for
// one; it returns -1 when it has, or the partition whose checkpoint moved
// past filtered-out events without any event to deliver.
func (sub *Subscription) fill(ctx context.Context) (Partition, error) {
	select {
	case <-sub.closed:
		return 0, ErrClosed
	default:
	}
	for sub.pos >= len(sub.cur.events) {
		if sub.err != nil {
			return 0, sub.err
		}
		select {
		case <-sub.closed:
			return 0, ErrClosed
		case b := <-sub.feed:
			if b.err != nil {
				sub.fail(b.err)
				return 0, sub.err
			}
			sub.cur, sub.pos = b, 0
			if len(b.events) == 0 {
				sub.checkpoint[b.partition] = b.next
				return b.partition, nil
			}
		case <-sub.done:
			sub.fail(ErrClosed)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return -1, nil
}

// Poll returns the events that are ready, at most max, waiting like Next
// if there are none: the way to handle events in batches (one transaction
// per batch). All come from one partition, in offset order. It also
// returns, with no events, when the subscription read only events its
// filters skip: Checkpoint has then moved on for that partition, and a
// runner that stores checkpoints should store it (else it would read them
// again after a restart, and its lag would never reach zero).
func (sub *Subscription) Poll(ctx context.Context, limit int) ([]Event, error) {
	moved, err := sub.fill(ctx)
	if err != nil {
		return nil, err
	}
	if moved >= 0 {
		return []Event{}, nil
	}
	return sub.take(min(max(1, limit), len(sub.cur.events)-sub.pos)), nil
}

// PollPartition is the partition of the batch Poll returned last (also
// when it returned no events).
func (sub *Subscription) PollPartition() Partition { return sub.cur.partition }

func (sub *Subscription) fail(err error) {
	sub.errOnce.Do(func() { sub.err = err })
}

// Events ranges over the subscription's events until ctx ends or an error
// occurs; the error, if any, is the last pair yielded.
func (sub *Subscription) Events(ctx context.Context) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		for {
			ev, err := sub.Next(ctx)
			if err != nil {
				if !errors.Is(err, context.Canceled) || ctx.Err() == nil {
					yield(Event{}, err)
				}
				return
			}
			if !yield(ev, nil) {
				return
			}
		}
	}
}

// Checkpoint returns the position after the last event Next returned
// (and after any filtered-out events read before it), to resume from.
func (sub *Subscription) Checkpoint() Checkpoint { return maps.Clone(sub.checkpoint) }

// Close stops the subscription's readers and waits for them; Next then
// returns ErrClosed. It may be called from any goroutine, more than once.
func (sub *Subscription) Close() error {
	sub.once.Do(func() { close(sub.closed) })
	sub.cancel()
	<-sub.done
	return nil
}
