package projection

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/internal/sqlitex"
)

// Local is a local projection: it handles every partition of the log, as
// this node applies it, into a SQLite read model of this node.
type Local struct {
	store *eventstore.Store
	db    *DB
	name  string
	h     Handler
	opt   Options

	mu         sync.Mutex
	state      string
	live       *proc
	liveCancel context.CancelFunc
	liveDone   chan struct{}
	paused     bool
	resume     chan struct{}
	rebuild    *rebuildState

	// testBeforeCommit, if set, runs before each batch commits; an error
	// aborts the batch and stops the runner (a crash between handling and
	// commit).
	testBeforeCommit func() error
	// testAfterCommit, if set, sees the events of each committed batch.
	testAfterCommit func(evs []eventstore.Event)
}

type rebuildState struct {
	started time.Time
	shadow  *proc
	done    chan struct{}
	err     error
}

// NewLocal returns a local projection named name (its checkpoints and
// parked events are kept under that name) writing the read model db with
// h. A read model belongs to one local projection. Run starts it.
func NewLocal(store *eventstore.Store, db *DB, name string, h Handler, opt Options) *Local {
	opt.defaults()
	opt.Logger = runnerLogger(opt.Logger, store, "projection", name)
	return &Local{store: store, db: db, name: name, h: h, opt: opt, state: "starting"}
}

// Run handles events until ctx ends, then returns nil after finishing the
// batch in hand (or abandoning it: it is handled again on the next Run).
// It returns an error only if the read model fails.
func (r *Local) Run(ctx context.Context) error {
	for {
		p, err := r.newProc(r.db.live())
		if err != nil {
			r.setState("failed: " + err.Error())
			return err
		}
		liveCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		r.mu.Lock()
		r.live, r.liveCancel, r.liveDone = p, cancel, done
		r.state = "running"
		r.mu.Unlock()
		err = p.run(liveCtx)
		cancel()
		close(done)
		if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
			r.setState("stopped")
			return nil
		}
		r.mu.Lock()
		paused, resume := r.paused, r.resume
		r.mu.Unlock()
		if !paused {
			r.setState("failed: " + err.Error())
			return err
		}
		select { // a rebuild is switching databases
		case <-resume:
		case <-ctx.Done():
			r.setState("stopped")
			return nil
		}
	}
}

func (r *Local) setState(s string) {
	r.mu.Lock()
	r.state = s
	r.mu.Unlock()
}

// pauseLive stops the live processor and keeps Run waiting until
// resumeLive.
func (r *Local) pauseLive() {
	r.mu.Lock()
	r.paused, r.resume = true, make(chan struct{})
	cancel, done := r.liveCancel, r.liveDone
	r.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (r *Local) resumeLive() {
	r.mu.Lock()
	r.paused = false
	close(r.resume)
	r.mu.Unlock()
}

// proc handles events into one database: the live read model, or a
// rebuild's new one.
type proc struct {
	r  *Local
	db *sqlitex.DB

	mu          sync.Mutex // one batch or retry at a time; guards the maps
	checkpoints map[int]uint64
	parkedKeys  map[parkKey]bool
	parked      map[int]int
}

type parkKey struct {
	partition int
	stream    string
}

func (r *Local) newProc(db *sqlitex.DB) (*proc, error) {
	p := &proc{r: r, db: db, checkpoints: map[int]uint64{}, parkedKeys: map[parkKey]bool{}, parked: map[int]int{}}
	ctx := context.Background()
	rows, err := db.Write.QueryContext(ctx, `SELECT partition, next_offset FROM esraft_checkpoints WHERE projection = ?`, r.name)
	if err != nil {
		return nil, fmt.Errorf("projection %s: load checkpoints: %w", r.name, err)
	}
	for rows.Next() {
		var part int
		var off uint64
		if err := rows.Scan(&part, &off); err != nil {
			rows.Close()
			return nil, err
		}
		p.checkpoints[part] = off
	}
	rows.Close()
	rows, err = db.Write.QueryContext(ctx, `SELECT partition, stream FROM esraft_parked WHERE projection = ?`, r.name)
	if err != nil {
		return nil, fmt.Errorf("projection %s: load parked: %w", r.name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var k parkKey
		if err := rows.Scan(&k.partition, &k.stream); err != nil {
			return nil, err
		}
		p.parkedKeys[k] = true
		p.parked[k.partition]++
	}
	return p, rows.Err()
}

// run handles events from the checkpoints until ctx ends.
func (p *proc) run(ctx context.Context) error {
	p.mu.Lock()
	from := eventstore.Checkpoint{}
	for part, off := range p.checkpoints {
		from[part] = off
	}
	p.mu.Unlock()
	sub, err := p.r.store.Subscribe(ctx, eventstore.SubscribeOptions{
		From: from, Categories: p.r.opt.Categories, EventTypes: p.r.opt.EventTypes, BatchSize: p.r.opt.BatchSize,
	})
	if err != nil {
		return err
	}
	defer sub.Close()
	for {
		batch, err := sub.Poll(ctx, p.r.opt.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		part := sub.PollPartition()
		if len(batch) == 0 { // only skipped events: store how far they go
			if err := p.advance(ctx, part, sub.Checkpoint()[part]); err != nil {
				return err
			}
			continue
		}
		if err := p.handleBatch(ctx, batch, sub.Checkpoint()[part]); err != nil {
			return err
		}
	}
}

// handleBatch handles events of one partition, in order; after is where
// the partition resumes once all are handled (past filtered events too).
func (p *proc) handleBatch(ctx context.Context, evs []eventstore.Event, after uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(evs) > 0 {
		n, herr, err := p.applyTx(ctx, evs, after)
		if err != nil {
			return err
		}
		if n == len(evs) {
			return nil
		}
		if err := p.retryOrPark(ctx, evs[n], herr); err != nil {
			return err
		}
		evs = evs[n+1:]
	}
	return nil
}

// applyTx handles evs in one transaction. If the handler fails on one,
// the transaction is rolled back and the events before it are handled
// again in a new one (handlers are deterministic on the read model), so
// the common case pays no savepoint per event. It returns how many events
// were committed and the handler's error that stopped it.
func (p *proc) applyTx(ctx context.Context, evs []eventstore.Event, after uint64) (int, error, error) {
	limit := len(evs)
	for {
		n, herr, err := p.applyPrefix(ctx, evs, limit, after)
		if err != nil || herr == nil || n == 0 {
			return n, herr, err
		}
		limit = n // roll back and commit the events before the failing one
		if _, herr2, err := p.applyPrefix(ctx, evs, limit, after); err != nil || herr2 != nil {
			if err == nil {
				err = fmt.Errorf("projection %s: handler failed on an event it handled a moment before: %w", p.r.name, herr2)
			}
			return 0, nil, err
		}
		return n, herr, nil
	}
}

// applyPrefix handles evs[:limit] in one transaction and commits it with
// the checkpoint, or, if the handler fails on evs[i], rolls back and
// returns i and the error. The in-memory checkpoint and parking change only
// once the transaction has committed.
func (p *proc) applyPrefix(ctx context.Context, evs []eventstore.Event, limit int, after uint64) (int, error, error) {
	part := evs[0].Partition
	var herr error
	n := 0
	parked := map[parkKey]int{}
	next := max(after, evs[len(evs)-1].Offset+1)
	if limit < len(evs) {
		next = evs[limit].Offset
	}
	err := p.db.Update(ctx, func(tx *sql.Tx) error {
		ctx := withTxStmts(ctx, tx)
		for n = 0; n < limit; n++ {
			ev := evs[n]
			if k := (parkKey{part, ev.Stream}); p.parkedKeys[k] || parked[k] > 0 {
				if err := p.park(ctx, tx, ev, "waiting behind an earlier parked event of its stream", 0, parked); err != nil {
					return err
				}
				continue
			}
			if herr = p.r.h(ctx, tx, ev); herr != nil {
				return herr
			}
		}
		if err := p.setCheckpoint(ctx, tx, part, next); err != nil {
			return err
		}
		if p.r.testBeforeCommit != nil {
			return p.r.testBeforeCommit()
		}
		return nil
	})
	if herr != nil {
		return n, herr, nil
	}
	if err != nil {
		return 0, nil, err
	}
	p.committed(part, next, parked)
	for k, n := range parked {
		p.r.opt.Logger.Warn("projection: events parked behind an earlier parked event of their stream",
			"partition", k.partition, "stream", k.stream, "events", n)
	}
	if p.r.testAfterCommit != nil {
		p.r.testAfterCommit(evs[:limit])
	}
	return limit, nil, nil
}

// committed records in memory what a committed transaction wrote.
func (p *proc) committed(part int, next uint64, parked map[parkKey]int) {
	p.checkpoints[part] = max(p.checkpoints[part], next)
	for k, n := range parked {
		p.parkedKeys[k] = true
		p.parked[k.partition] += n
	}
}

// advance stores a checkpoint moved past events the filters skip.
func (p *proc) advance(ctx context.Context, part int, next uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.checkpoints[part] >= next {
		return nil
	}
	err := p.db.Update(ctx, func(tx *sql.Tx) error { return p.setCheckpoint(ctx, tx, part, next) })
	if err == nil {
		p.committed(part, next, nil)
	}
	return err
}

func (p *proc) setCheckpoint(ctx context.Context, tx *sql.Tx, part int, next uint64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO esraft_checkpoints (projection, partition, next_offset) VALUES (?, ?, ?)
		ON CONFLICT (projection, partition) DO UPDATE SET next_offset = excluded.next_offset`, p.r.name, part, next)
	return err
}

// park writes ev to the parked table in tx and counts it in pending.
func (p *proc) park(ctx context.Context, tx *sql.Tx, ev eventstore.Event, msg string, attempts int, pending map[parkKey]int) error {
	_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO esraft_parked (projection, partition, offset, stream, event_type, error, attempts)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, p.r.name, ev.Partition, ev.Offset, ev.Stream, ev.Type, msg, attempts)
	if err == nil {
		pending[parkKey{ev.Partition, ev.Stream}]++
	}
	return err
}

// retryOrPark tries ev again with backoff, each attempt in its own
// transaction, and parks it after MaxAttempts.
func (p *proc) retryOrPark(ctx context.Context, ev eventstore.Event, herr error) error {
	for attempt := 2; attempt <= p.r.opt.MaxAttempts; attempt++ {
		p.r.opt.Logger.Debug("projection: handler failed; retrying",
			"partition", ev.Partition, "offset", ev.Offset, "stream", ev.Stream, "attempts", attempt-1, "err", herr)
		if err := sleep(ctx, p.r.opt.delay(attempt-1)); err != nil {
			return err
		}
		err := p.db.Update(ctx, func(tx *sql.Tx) error {
			if herr = p.r.h(ctx, tx, ev); herr != nil {
				return herr
			}
			return p.setCheckpoint(ctx, tx, ev.Partition, ev.Offset+1)
		})
		if err == nil {
			p.committed(ev.Partition, ev.Offset+1, nil)
			return nil
		}
		if herr == nil {
			return err // the database failed, not the handler
		}
	}
	parked := map[parkKey]int{}
	err := p.db.Update(ctx, func(tx *sql.Tx) error {
		if err := p.park(ctx, tx, ev, herr.Error(), p.r.opt.MaxAttempts, parked); err != nil {
			return err
		}
		return p.setCheckpoint(ctx, tx, ev.Partition, ev.Offset+1)
	})
	if err == nil {
		p.committed(ev.Partition, ev.Offset+1, parked)
		p.r.opt.Logger.Warn("projection: event parked",
			"partition", ev.Partition, "offset", ev.Offset, "stream", ev.Stream, "attempts", p.r.opt.MaxAttempts, "err", herr)
	}
	return err
}

// Parked lists the parked events of this projection, by partition and
// offset.
func (r *Local) Parked(ctx context.Context) ([]ParkedEvent, error) {
	var out []ParkedEvent
	err := r.db.View(ctx, func(db *sql.DB) error {
		rows, err := db.QueryContext(ctx, `SELECT partition, offset, stream, error, attempts FROM esraft_parked
			WHERE projection = ? ORDER BY partition, offset`, r.name)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e ParkedEvent
			if err := rows.Scan(&e.Partition, &e.Offset, &e.Stream, &e.Error, &e.Attempts); err != nil {
				return err
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	return out, err
}

// Retry handles the parked events of the stream of the parked event at
// (partition, offset) again, oldest first, each in its own transaction,
// stopping at the first that fails again (its error and attempts are
// updated). When none is left, the stream flows again.
func (r *Local) Retry(ctx context.Context, partition int, offset uint64) error {
	r.mu.Lock()
	p := r.live
	r.mu.Unlock()
	if p == nil {
		return ErrNotRunning
	}
	return p.retry(ctx, partition, offset)
}

func (p *proc) retry(ctx context.Context, partition int, offset uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var stream string
	err := p.db.Write.QueryRowContext(ctx, `SELECT stream FROM esraft_parked WHERE projection = ? AND partition = ? AND offset = ?`,
		p.r.name, partition, offset).Scan(&stream)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: partition %d offset %d", ErrNotParked, partition, offset)
	}
	if err != nil {
		return err
	}
	rows, err := p.db.Write.QueryContext(ctx, `SELECT offset, attempts FROM esraft_parked WHERE projection = ? AND partition = ? AND stream = ? ORDER BY offset`,
		p.r.name, partition, stream)
	if err != nil {
		return err
	}
	type row struct {
		off      uint64
		attempts int
	}
	var chain []row
	for rows.Next() {
		var rw row
		if err := rows.Scan(&rw.off, &rw.attempts); err != nil {
			rows.Close()
			return err
		}
		chain = append(chain, rw)
	}
	rows.Close()
	for _, rw := range chain {
		evs, _, err := p.r.store.ReadPartition(ctx, partition, rw.off, 1)
		if err != nil {
			return err
		}
		var herr error
		err = p.db.Update(ctx, func(tx *sql.Tx) error {
			if len(evs) == 1 && evs[0].Offset == rw.off { // else deleted since: drop it
				if herr = p.r.h(ctx, tx, evs[0]); herr != nil {
					return herr
				}
			}
			_, err := tx.ExecContext(ctx, `DELETE FROM esraft_parked WHERE projection = ? AND partition = ? AND offset = ?`, p.r.name, partition, rw.off)
			return err
		})
		if herr != nil {
			_, err := p.db.Write.ExecContext(ctx, `UPDATE esraft_parked SET error = ?, attempts = ? WHERE projection = ? AND partition = ? AND offset = ?`,
				herr.Error(), rw.attempts+1, p.r.name, partition, rw.off)
			return errors.Join(fmt.Errorf("projection %s: retry of partition %d offset %d: %w", p.r.name, partition, rw.off, herr), err)
		}
		if err != nil {
			return err
		}
		p.parked[partition]--
	}
	delete(p.parkedKeys, parkKey{partition, stream})
	return nil
}

// Status reports the projection's progress on this node.
func (r *Local) Status() Status {
	r.mu.Lock()
	p, state, rb := r.live, r.state, r.rebuild
	r.mu.Unlock()
	st := Status{Name: r.name, State: state}
	if p != nil {
		st.Partitions, st.Lag, st.Parked = p.status()
	}
	if rb != nil {
		_, lag, _ := rb.shadow.status()
		total := uint64(0)
		for _, ps := range st.Partitions {
			total += ps.Head
		}
		st.Rebuild = &RebuildProgress{Replayed: total - min(total, lag), Total: total, Started: rb.started}
		st.State = "rebuilding"
	}
	return st
}

func (p *proc) status() ([]PartitionStatus, uint64, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []PartitionStatus
	var lag uint64
	parked := 0
	for part := 0; part < p.r.store.Partitions(); part++ {
		head, _ := p.r.store.Head(part)
		pos := p.checkpoints[part]
		ps := PartitionStatus{Partition: part, Position: pos, Head: head, Parked: p.parked[part]}
		if head > pos {
			ps.Lag = head - pos
		}
		lag += ps.Lag
		parked += ps.Parked
		out = append(out, ps)
	}
	return out, lag, parked
}

// caughtUp reports whether p has handled every partition up to heads.
func (p *proc) caughtUp(heads []uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for part, h := range heads {
		if p.checkpoints[part] < h {
			return false
		}
	}
	return true
}

func (r *Local) heads() ([]uint64, error) {
	heads := make([]uint64, r.store.Partitions())
	for part := range heads {
		h, err := r.store.Head(part)
		if err != nil {
			return nil, err
		}
		heads[part] = h
	}
	return heads, nil
}

// Rebuild replays the whole history into a new read model while the live
// one keeps serving reads and following new events, then switches to the
// new one once it has caught up. It returns at once; Status reports the
// progress and Wait... use RebuildDone to wait for the end.
func (r *Local) Rebuild(ctx context.Context) error {
	r.mu.Lock()
	if r.rebuild != nil {
		r.mu.Unlock()
		return ErrRebuildRunning
	}
	shadowDB, gen, err := r.db.newShadow(ctx)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	sp, err := r.newProc(shadowDB)
	if err != nil {
		r.mu.Unlock()
		shadowDB.Close()
		return err
	}
	rb := &rebuildState{started: time.Now(), shadow: sp, done: make(chan struct{})}
	r.rebuild = rb
	r.mu.Unlock()
	go func() {
		rb.err = r.runRebuild(ctx, sp, shadowDB, gen)
		logRebuild(r.opt.Logger, rb.err)
		r.mu.Lock()
		r.rebuild = nil
		r.mu.Unlock()
		close(rb.done)
	}()
	return nil
}

// RebuildDone returns a channel closed when the running rebuild ends (nil
// if none runs) and a function giving its error.
func (r *Local) RebuildDone() (<-chan struct{}, func() error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rebuild == nil {
		return nil, func() error { return nil }
	}
	rb := r.rebuild
	return rb.done, func() error { return rb.err }
}

func (r *Local) runRebuild(ctx context.Context, sp *proc, shadowDB *sqlitex.DB, gen int) error {
	sctx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- sp.run(sctx) }()
	stop := func() {
		cancel()
		<-runErr
	}
	// Catch up while the live read model serves and follows.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for caught := false; !caught; {
		select {
		case err := <-runErr:
			cancel()
			shadowDB.Close()
			return fmt.Errorf("projection %s: rebuild: %w", r.name, err)
		case <-ctx.Done():
			stop()
			shadowDB.Close()
			return ctx.Err()
		case <-tick.C:
			heads, err := r.heads()
			if err != nil {
				stop()
				shadowDB.Close()
				return err
			}
			caught = sp.caughtUp(heads)
		}
	}
	// Switch: stop the live processor, let the new one reach the heads of
	// this instant, and make it live.
	r.pauseLive()
	defer r.resumeLive()
	heads, err := r.heads()
	if err == nil {
		for !sp.caughtUp(heads) && err == nil {
			select {
			case e := <-runErr:
				err = fmt.Errorf("projection %s: rebuild: %w", r.name, e)
				runErr <- e
			case <-ctx.Done():
				err = ctx.Err()
			case <-tick.C:
			}
		}
	}
	stop()
	if err != nil {
		shadowDB.Close()
		return err
	}
	return r.db.switchTo(shadowDB, gen)
}
