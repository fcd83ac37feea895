package projection

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/internal/backoff"
)

// The runner core: what Local and Group do alike with the events of a
// partition. A core follows a subscription, handles each batch in order
// (in one transaction up to the first event the handler fails on),
// retries a failing event alone with backoff, parks it after MaxAttempts
// with the later events of its stream behind it, and handles parked
// events again on demand. The runners differ only in where their progress
// lives: Local writes it into the read model, in the handler's
// transaction (a journal); Group commits it to the log after each batch.

// A journal writes a runner's progress in the transaction that made it,
// so that progress and the handler's changes commit or roll back
// together. A core without one (a Group's) keeps its progress in memory
// only and its runner records it elsewhere.
type journal interface {
	checkpoint(ctx context.Context, tx *sql.Tx, partition eventstore.Partition, next uint64) error
	park(ctx context.Context, tx *sql.Tx, p parking) error
	unpark(ctx context.Context, tx *sql.Tx, partition eventstore.Partition, offset uint64) error
}

// parking is an event a core parks: what Parked lists, and the event's
// type, which a local projection's table keeps too.
type parking struct {
	ParkedEvent
	eventType string
}

// parkingOf is ev parked with msg after attempts.
func parkingOf(ev eventstore.Event, msg string, attempts int) parking {
	return parking{ParkedEvent{Partition: ev.Partition, Offset: ev.Offset, Stream: ev.Stream, Error: msg, Attempts: attempts}, ev.Type}
}

// testHooks let tests crash a runner between handling and commit and see
// what it committed.
type testHooks struct {
	// testBeforeCommit, if set, runs last in each batch transaction; an
	// error aborts the batch and stops the runner (a crash between
	// handling and commit).
	testBeforeCommit func() error
	// testAfterCommit, if set, sees the events of each committed batch
	// transaction.
	testAfterCommit func(evs []eventstore.Event)
}

// core handles events with a Handler. Its methods ending in Locked need
// mu held: a runner holds it across a batch and whatever it records
// after, so that a batch and a retry of parked events never interleave.
type core struct {
	name    string // the projection or group, for errors
	h       Handler
	opt     *Options
	store   *eventstore.Store
	writer  Updater // the runner's database; nil: the handler gets a nil tx
	journal journal // nil: progress is recorded by the runner, elsewhere
	// replay: the handler's effects are all in its transaction and
	// deterministic, so when it fails on an event the transaction is
	// rolled back and the events before it are handled again in a new one:
	// the common case pays no savepoint per event. Without replay, each
	// event runs in a savepoint (if there is a transaction at all) and
	// the events before a failing one commit as they are.
	replay bool
	hooks  *testHooks

	mu      sync.Mutex
	cursors map[eventstore.Partition]*cursor
}

// cursor is where a core stands in one partition, as committed.
type cursor struct {
	next    uint64         // the next offset to handle
	parked  map[string]int // parked events per stream; its later events park behind them
	skipped uint64         // parked events dropped unhandled by an operator
}

func (c *core) cursorLocked(part eventstore.Partition) *cursor {
	if c.cursors == nil {
		c.cursors = map[eventstore.Partition]*cursor{}
	}
	cur := c.cursors[part]
	if cur == nil {
		cur = &cursor{parked: map[string]int{}}
		c.cursors[part] = cur
	}
	return cur
}

// parkedCount is how many events of the partition are parked.
func (cur *cursor) parkedCount() int {
	n := 0
	for _, k := range cur.parked {
		n += k
	}
	return n
}

// committedLocked records in memory that part resumes at next (or
// beyond) and that parks were parked.
func (c *core) committedLocked(part eventstore.Partition, next uint64, parks []parking) {
	cur := c.cursorLocked(part)
	cur.next = max(cur.next, next)
	for _, pe := range parks {
		cur.parked[pe.Stream]++
	}
}

// unparkedLocked records in memory that n parked events of stream were
// handled; the stream flows again once none is left.
func (c *core) unparkedLocked(part eventstore.Partition, stream string, n int) {
	cur := c.cursorLocked(part)
	if cur.parked[stream] -= n; cur.parked[stream] <= 0 {
		delete(cur.parked, stream)
	}
}

// follow subscribes to partitions (all if nil) from from and passes each
// polled batch to batch, with where its partition resumes once the batch
// is handled (past events the filters skipped: a batch may be empty).
// It returns batch's error, or ctx's once it ends.
func (c *core) follow(ctx context.Context, partitions []eventstore.Partition, from eventstore.Checkpoint,
	batch func(ctx context.Context, part eventstore.Partition, evs []eventstore.Event, after uint64) error) error {
	sub, err := c.store.Subscribe(ctx, eventstore.SubscribeOptions{
		Partitions: partitions, From: from,
		Streams: c.opt.Streams, Categories: c.opt.Categories, EventTypes: c.opt.EventTypes, BatchSize: c.opt.BatchSize,
	})
	if err != nil {
		return err
	}
	defer sub.Close()
	for {
		evs, err := sub.Poll(ctx, c.opt.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		part := sub.PollPartition()
		if err := batch(ctx, part, evs, sub.Checkpoint()[part]); err != nil {
			return err
		}
	}
}

// inTx runs fn in a transaction of the runner's database, ctx carrying
// the transaction's statement cache (see Exec), or with a nil tx if the
// runner has none.
func (c *core) inTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if c.writer == nil {
		return fn(ctx, nil)
	}
	return c.writer.Update(ctx, func(tx *sql.Tx) error { return fn(withTxStmts(ctx, tx), tx) })
}

// saveLocked records that part resumes at next, with parks parked: in a
// transaction of its own if the core has a journal, then in memory.
func (c *core) saveLocked(ctx context.Context, part eventstore.Partition, next uint64, parks []parking) error {
	if c.journal != nil {
		err := c.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error { return c.write(ctx, tx, part, next, parks) })
		if err != nil {
			return err
		}
	}
	c.committedLocked(part, next, parks)
	return nil
}

// write puts progress in tx's journal, if any.
func (c *core) write(ctx context.Context, tx *sql.Tx, part eventstore.Partition, next uint64, parks []parking) error {
	if c.journal == nil {
		return nil
	}
	for _, pe := range parks {
		if err := c.journal.park(ctx, tx, pe); err != nil {
			return err
		}
	}
	return c.journal.checkpoint(ctx, tx, part, next)
}

// advanceLocked moves part past events the filters skipped, up to next;
// false if it was there already.
func (c *core) advanceLocked(ctx context.Context, part eventstore.Partition, next uint64) (bool, error) {
	if c.cursorLocked(part).next >= next {
		return false, nil
	}
	return true, c.saveLocked(ctx, part, next, nil)
}

// handleBatchLocked handles evs, events of one partition in offset
// order, and returns the events it parked; after is where the partition
// resumes once all are handled. The events go through the handler in one
// transaction up to the first that fails; the events before it commit,
// and the failed one is retried alone with backoff, each attempt in a
// transaction of its own and none held while waiting (the database has
// one writer, which other partitions share), then parked if it keeps
// failing; the rest of the batch follows.
func (c *core) handleBatchLocked(ctx context.Context, evs []eventstore.Event, after uint64) ([]parking, error) {
	var parks []parking
	for len(evs) > 0 {
		n, herr, waiting, err := c.applyLocked(ctx, evs, after)
		if err != nil {
			return nil, err
		}
		parks = append(parks, waiting...)
		if herr == nil {
			break
		}
		pe, err := c.retryOrParkLocked(ctx, evs[n], herr)
		if err != nil {
			return nil, err
		}
		if pe != nil {
			parks = append(parks, *pe)
		}
		evs = evs[n+1:]
	}
	return parks, nil
}

// applyLocked handles evs in one transaction and commits the events
// before the first the handler fails on: it returns that event's index
// and error (or len(evs) and nil) and the events it parked behind
// earlier ones of their streams. err is a failure of the transaction:
// nothing was committed.
func (c *core) applyLocked(ctx context.Context, evs []eventstore.Event, after uint64) (int, error, []parking, error) {
	n, herr, parks, err := c.prefixLocked(ctx, evs, len(evs), after)
	if err != nil || herr == nil || !c.replay || n == 0 {
		return n, herr, parks, err
	}
	// Rolled back: commit the events before the failing one on their own.
	_, herr2, parks, err := c.prefixLocked(ctx, evs, n, after)
	if err == nil && herr2 != nil {
		err = fmt.Errorf("projection %s: handler failed on an event it handled a moment before: %w", c.name, herr2)
	}
	if err != nil {
		return 0, nil, nil, err
	}
	return n, herr, parks, nil
}

// prefixLocked handles evs[:limit] in one transaction, in order; events
// of a stream with a parked event are parked behind it, unhandled. If the
// handler fails on evs[i], it returns i and the error; with replay the
// transaction is then rolled back, else evs[:i] commit. The cursor moves
// only once the transaction has committed.
func (c *core) prefixLocked(ctx context.Context, evs []eventstore.Event, limit int, after uint64) (n int, herr error, parks []parking, err error) {
	part := evs[0].Partition
	cur := c.cursorLocked(part)
	var next uint64
	err = c.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for n = 0; n < limit; n++ {
			if err := ctx.Err(); err != nil {
				return err // stopping: the rest of the batch is given back
			}
			ev := evs[n]
			if cur.parked[ev.Stream] > 0 {
				parks = append(parks, parkingOf(ev, "waiting behind an earlier parked event of its stream", 0))
				continue
			}
			if herr = c.try(ctx, tx, ev); herr != nil {
				if c.replay {
					return herr
				}
				break
			}
		}
		next = max(after, evs[len(evs)-1].Offset+1)
		if n < len(evs) {
			next = evs[n].Offset
		}
		if err := c.write(ctx, tx, part, next, parks); err != nil {
			return err
		}
		if c.hooks.testBeforeCommit != nil {
			return c.hooks.testBeforeCommit()
		}
		return nil
	})
	if herr != nil && c.replay {
		return n, herr, nil, nil
	}
	if err != nil {
		return 0, nil, nil, err
	}
	c.committedLocked(part, next, parks)
	logWaiting(c.opt.Logger, parks)
	if c.hooks.testAfterCommit != nil {
		c.hooks.testAfterCommit(evs[:n])
	}
	return n, herr, parks, nil
}

// try runs the handler on ev. Without replay it runs inside a savepoint
// of tx (if any), so that a failed event leaves no trace in a transaction
// that commits the events before it.
func (c *core) try(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
	if c.replay || tx == nil {
		return c.h(ctx, tx, ev)
	}
	if _, err := tx.ExecContext(ctx, "SAVEPOINT ev"); err != nil {
		return err
	}
	if herr := c.h(ctx, tx, ev); herr != nil {
		if _, err := tx.ExecContext(ctx, "ROLLBACK TO ev; RELEASE ev"); err != nil {
			return errors.Join(herr, err)
		}
		return herr
	}
	_, err := tx.ExecContext(ctx, "RELEASE ev")
	return err
}

// retryOrParkLocked handles ev again after it failed with herr, sleeping
// between attempts outside any transaction: up to MaxAttempts failures in
// all, and for up to MaxRetryTime while the handler returns Retry errors
// (which do not count as failures). It parks ev (and, from then on, its
// stream) if it still fails: it returns the parked event, nil if an
// attempt succeeded. err is ctx's end (the event is then neither handled
// nor parked: it is given back) or a failure of the database.
func (c *core) retryOrParkLocked(ctx context.Context, ev eventstore.Event, herr error) (*parking, error) {
	start := time.Now()
	failures, attempts := 0, 1
	for ; ; attempts++ {
		if isRetry(herr) {
			if time.Since(start) >= c.opt.MaxRetryTime {
				break
			}
		} else if failures++; failures >= c.opt.MaxAttempts {
			break
		}
		c.opt.Logger.Debug("projection: handler failed; retrying",
			"partition", ev.Partition, "offset", ev.Offset, "stream", ev.Stream, "attempts", attempts, "transient", isRetry(herr), "err", herr)
		if err := backoff.Sleep(ctx, c.opt.delay(attempts)); err != nil {
			return nil, err
		}
		err := c.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if herr = c.h(ctx, tx, ev); herr != nil {
				return herr
			}
			return c.write(ctx, tx, ev.Partition, ev.Offset+1, nil)
		})
		if err == nil {
			c.committedLocked(ev.Partition, ev.Offset+1, nil)
			return nil, nil
		}
		if herr == nil {
			return nil, err // the database failed, not the handler
		}
		if ctx.Err() != nil {
			return nil, ctx.Err() // stopping: give the event back
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pe := parkingOf(ev, herr.Error(), attempts)
	if err := c.saveLocked(ctx, ev.Partition, ev.Offset+1, []parking{pe}); err != nil {
		return nil, err
	}
	c.opt.Logger.Warn("projection: event parked",
		"partition", ev.Partition, "offset", ev.Offset, "stream", ev.Stream, "attempts", attempts, "err", herr)
	return &pe, nil
}

// retryParkedLocked handles the parked events at offsets of part again,
// oldest first, each in a transaction of its own that also unparks it,
// and stops at the first that fails. It returns how many were handled and
// why the next one was not: failed if the handler or its transaction
// failed on it (nothing of the attempt committed), err if it could not
// be read. An event deleted since it was parked is unparked unhandled.
// The cursor is left to the caller (unparkedLocked), who may have to
// record the outcome elsewhere first.
func (c *core) retryParkedLocked(ctx context.Context, part eventstore.Partition, offsets []uint64) (handled int, failed, err error) {
	for _, off := range offsets {
		evs, _, err := c.store.ReadPartition(ctx, part, off, 1)
		if err != nil {
			c.opt.Logger.Warn("projection: retry of parked events: read", "partition", part, "offset", off, "err", err)
			return handled, nil, err
		}
		failed = c.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if len(evs) == 1 && evs[0].Offset == off {
				if err := c.h(ctx, tx, evs[0]); err != nil {
					return err
				}
			}
			if c.journal == nil {
				return nil
			}
			return c.journal.unpark(ctx, tx, part, off)
		})
		if failed != nil {
			c.opt.Logger.Warn("projection: parked event failed again", "partition", part, "offset", off, "err", failed)
			return handled, failed, nil
		}
		handled++
	}
	return handled, nil, nil
}

// partitionStatus reports a runner at pos in part, with parked events
// set aside and skipped ones, against the partition's head on this node.
func partitionStatus(store *eventstore.Store, part eventstore.Partition, pos uint64, parked int, skipped uint64) PartitionStatus {
	head, _ := store.Head(part)
	ps := PartitionStatus{Partition: part, Position: pos, Head: head, Parked: parked, Skipped: skipped}
	if head > pos {
		ps.Lag = head - pos
	}
	return ps
}

// heads is the sum of the partitions' heads: every event there is.
func (st *Status) heads() uint64 {
	var n uint64
	for _, ps := range st.Partitions {
		n += ps.Head
	}
	return n
}

// add counts a partition into st.
func (st *Status) add(ps PartitionStatus) {
	st.Partitions = append(st.Partitions, ps)
	st.Lag += ps.Lag
	st.Parked += ps.Parked
	st.Skipped += ps.Skipped
}
