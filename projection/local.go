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
	"github.com/esraft/esraft/internal/sqltx"
)

// Updater runs fn in a write transaction, committed if fn returns nil and
// rolled back otherwise. A group member given one (GroupOptions.DB)
// handles each batch in one of its transactions.
type Updater interface {
	Update(ctx context.Context, fn func(tx *sql.Tx) error) error
}

// ReadModel is the database a local projection writes: its live tables,
// and a shadow database that a rebuild fills and then promotes to live in
// one step. Package projection/sqlite's *DB is one (SQLite); projection
// itself links no database driver.
type ReadModel interface {
	// Update runs fn in a write transaction of the live database.
	Updater
	// View runs fn with a pool of read-only connections to the live
	// database.
	View(ctx context.Context, fn func(db *sql.DB) error) error
	// WriteDB is the live database's writing pool (one connection).
	WriteDB() *sql.DB
	// OpenShadow opens an empty database with the same schema beside the
	// live one and returns its writing pool (one connection); reads stay
	// on the live database. PromoteShadow makes it live; DropShadow
	// discards it.
	OpenShadow(ctx context.Context) (*sql.DB, error)
	PromoteShadow() error
	DropShadow() error
}

// The tables a local projection keeps in its read model, beside the
// user's: created when it starts on a database, if missing.
const internalSchema = `
CREATE TABLE IF NOT EXISTS esraft_checkpoints (
	projection TEXT NOT NULL,
	partition  INTEGER NOT NULL,
	next_offset INTEGER NOT NULL,
	PRIMARY KEY (projection, partition)
);
CREATE TABLE IF NOT EXISTS esraft_parked (
	projection TEXT NOT NULL,
	partition  INTEGER NOT NULL,
	offset     INTEGER NOT NULL,
	stream     TEXT NOT NULL,
	event_type TEXT NOT NULL,
	error      TEXT NOT NULL,
	attempts   INTEGER NOT NULL,
	parked_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
	PRIMARY KEY (projection, partition, offset)
);
CREATE TABLE IF NOT EXISTS esraft_skipped (
	projection TEXT NOT NULL,
	partition  INTEGER NOT NULL,
	offset     INTEGER NOT NULL,
	stream     TEXT NOT NULL,
	event_type TEXT NOT NULL,
	error      TEXT NOT NULL,
	attempts   INTEGER NOT NULL,
	parked_at  TEXT NOT NULL,
	skipped_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
	PRIMARY KEY (projection, partition, offset)
);`

// Local is a local projection: it handles every partition of the log, as
// this node applies it, into a read model of this node.
type Local struct {
	store *eventstore.Store
	db    ReadModel
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
	// switched, while a rebuild switches read models, is closed once Run
	// has made the new one's processor live: live is the old one until
	// then, whose database the switch replaces (liveProc waits).
	switched chan struct{}
	running  bool // Run is running
	rebuild  *rebuildState
	// lastRebuild is how the last rebuild ended (Status.LastRebuild).
	lastRebuild *RebuildResult

	testHooks
	// testAfterPromote, if set, runs once a rebuild's database is the
	// read model and before the live processor is restarted on it.
	testAfterPromote func()
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
func NewLocal(store *eventstore.Store, db ReadModel, name string, h Handler, opt Options) *Local {
	opt.defaults()
	opt.Logger = runnerLogger(opt.Logger, store, "projection", name)
	return &Local{store: store, db: db, name: name, h: h, opt: opt, state: "starting"}
}

// Run handles events until ctx ends, then returns nil. The handler's ctx
// ends with it, and the batch in hand is abandoned unless its transaction
// committed: it is handled again on the next Run. It returns an error
// only if the read model fails.
func (r *Local) Run(ctx context.Context) error {
	r.mu.Lock()
	r.running = true
	r.mu.Unlock()
	defer func() { // no switch waits for a Run that ended
		r.mu.Lock()
		r.running = false
		r.endSwitchLocked()
		r.mu.Unlock()
	}()
	for {
		p, err := r.newProc(r.db, r.db.WriteDB())
		if err != nil {
			r.setState("failed: " + err.Error())
			return err
		}
		liveCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		r.mu.Lock()
		r.live, r.liveCancel, r.liveDone = p, cancel, done
		r.state = "running"
		r.endSwitchLocked()
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

// endSwitchLocked releases the waiters of a rebuild's switch (liveProc),
// if one is open; r.mu is held.
func (r *Local) endSwitchLocked() {
	if r.switched != nil {
		close(r.switched)
		r.switched = nil
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
	if r.switched == nil && r.running { // Run makes the new processor live
		r.switched = make(chan struct{})
	}
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
// rebuild's new one. db is the database's writing pool.
type proc struct {
	core
	db *sql.DB

	lastMu sync.Mutex
	last   []position // what status last reported
}

// writer runs transactions on a database's writing pool.
type writer struct{ db *sql.DB }

func (w writer) Update(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return sqltx.Update(ctx, w.db, fn)
}

// tables keep a local projection's progress in its read model, written in
// the handler's transaction: the read model never applies an event twice
// nor skips one.
type tables struct{ projection string }

func (t tables) checkpoint(ctx context.Context, tx *sql.Tx, part eventstore.Partition, next uint64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO esraft_checkpoints (projection, partition, next_offset) VALUES (?, ?, ?)
		ON CONFLICT (projection, partition) DO UPDATE SET next_offset = excluded.next_offset`, t.projection, part, next)
	return err
}

func (t tables) park(ctx context.Context, tx *sql.Tx, p parking) error {
	_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO esraft_parked (projection, partition, offset, stream, event_type, error, attempts)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, t.projection, p.Partition, p.Offset, p.Stream, p.eventType, p.Error, p.Attempts)
	return err
}

func (t tables) unpark(ctx context.Context, tx *sql.Tx, part eventstore.Partition, offset uint64) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM esraft_parked WHERE projection = ? AND partition = ? AND offset = ?`, t.projection, part, offset)
	return err
}

// newProc is a processor writing through w to the database whose writing
// pool is db, resuming from the checkpoints it holds.
func (r *Local) newProc(w Updater, db *sql.DB) (*proc, error) {
	p := &proc{db: db, core: core{
		name: r.name, h: r.h, opt: &r.opt, store: r.store, writer: w, journal: tables{r.name}, replay: true, hooks: &r.testHooks,
	}}
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, internalSchema); err != nil {
		return nil, fmt.Errorf("projection %s: create its tables: %w", r.name, err)
	}
	rows, err := db.QueryContext(ctx, `SELECT partition, next_offset FROM esraft_checkpoints WHERE projection = ?`, r.name)
	if err != nil {
		return nil, fmt.Errorf("projection %s: load checkpoints: %w", r.name, err)
	}
	for rows.Next() {
		var part eventstore.Partition
		var off uint64
		if err := rows.Scan(&part, &off); err != nil {
			rows.Close()
			return nil, err
		}
		p.cursorLocked(part).next = off
	}
	rows.Close()
	rows, err = db.QueryContext(ctx, `SELECT partition, stream FROM esraft_parked WHERE projection = ?`, r.name)
	if err != nil {
		return nil, fmt.Errorf("projection %s: load parked: %w", r.name, err)
	}
	for rows.Next() {
		var part eventstore.Partition
		var stream string
		if err := rows.Scan(&part, &stream); err != nil {
			rows.Close()
			return nil, err
		}
		p.cursorLocked(part).parked[stream]++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = db.QueryContext(ctx, `SELECT partition, count(*) FROM esraft_skipped WHERE projection = ? GROUP BY partition`, r.name)
	if err != nil {
		return nil, fmt.Errorf("projection %s: load skipped: %w", r.name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var part eventstore.Partition
		var n uint64
		if err := rows.Scan(&part, &n); err != nil {
			return nil, err
		}
		p.cursorLocked(part).skipped = n
	}
	return p, rows.Err()
}

// run handles events from the checkpoints until ctx ends.
func (p *proc) run(ctx context.Context) error {
	if err := p.checkNotAhead(ctx); err != nil {
		return err
	}
	p.mu.Lock()
	from := eventstore.Checkpoint{}
	for part, cur := range p.cursors {
		from[part] = cur.next
	}
	p.mu.Unlock()
	return p.follow(ctx, nil, from, func(ctx context.Context, part eventstore.Partition, evs []eventstore.Event, after uint64) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(evs) == 0 { // only skipped events: store how far they go
			_, err := p.advanceLocked(ctx, part, after)
			return err
		}
		_, err := p.handleBatchLocked(ctx, evs, after)
		return err
	})
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
func (r *Local) Retry(ctx context.Context, partition eventstore.Partition, offset uint64) error {
	p, err := r.liveProc(ctx)
	if err != nil {
		return err
	}
	return p.retry(ctx, partition, offset)
}

// liveProc is the processor of the live read model, if the projection
// runs; while a rebuild switches read models, it waits for the new one's
// (or for ctx, or for Run to end).
func (r *Local) liveProc(ctx context.Context) (*proc, error) {
	for {
		r.mu.Lock()
		p, switched := r.live, r.switched
		r.mu.Unlock()
		if p == nil {
			return nil, ErrNotRunning
		}
		if switched == nil {
			return p, nil
		}
		select {
		case <-switched:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: switching to the rebuilt read model: %w", ErrNotRunning, ctx.Err())
		}
	}
}

func (p *proc) retry(ctx context.Context, partition eventstore.Partition, offset uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var stream string
	err := p.db.QueryRowContext(ctx, `SELECT stream FROM esraft_parked WHERE projection = ? AND partition = ? AND offset = ?`,
		p.name, partition, offset).Scan(&stream)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: partition %d offset %d", ErrNotParked, partition, offset)
	}
	if err != nil {
		return err
	}
	rows, err := p.db.QueryContext(ctx, `SELECT offset, attempts FROM esraft_parked WHERE projection = ? AND partition = ? AND stream = ? ORDER BY offset`,
		p.name, partition, stream)
	if err != nil {
		return err
	}
	var offsets []uint64
	var attempts []int
	for rows.Next() {
		var off uint64
		var n int
		if err := rows.Scan(&off, &n); err != nil {
			rows.Close()
			return err
		}
		offsets, attempts = append(offsets, off), append(attempts, n)
	}
	rows.Close()
	handled, failed, err := p.retryParkedLocked(ctx, partition, offsets)
	p.unparkedLocked(partition, stream, handled)
	if failed != nil {
		off := offsets[handled]
		_, err := p.db.ExecContext(ctx, `UPDATE esraft_parked SET error = ?, attempts = ? WHERE projection = ? AND partition = ? AND offset = ?`,
			failed.Error(), attempts[handled]+1, p.name, partition, off)
		return errors.Join(fmt.Errorf("projection %s: retry of partition %d offset %d: %w", p.name, partition, off, failed), err)
	}
	return err
}

// Skip drops the parked event at (partition, offset) without handling it:
// an operator's decision that the read model will never have it. Its row
// moves from esraft_parked to esraft_skipped (with the time of the skip)
// in one transaction of the read model, Status counts it in Skipped, and
// it is logged at WARN. Events parked behind it on its stream stay parked
// (retry or skip them too); the stream flows again once none is left. A
// rebuild replays every event, a skipped one included.
func (r *Local) Skip(ctx context.Context, partition eventstore.Partition, offset uint64) error {
	p, err := r.liveProc(ctx)
	if err != nil {
		return err
	}
	return p.skip(ctx, partition, offset)
}

func (p *proc) skip(ctx context.Context, partition eventstore.Partition, offset uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var pe ParkedEvent
	err := p.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT stream, error, attempts FROM esraft_parked WHERE projection = ? AND partition = ? AND offset = ?`,
			p.name, partition, offset).Scan(&pe.Stream, &pe.Error, &pe.Attempts)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: projection %s, partition %d offset %d", ErrNotParked, p.name, partition, offset)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO esraft_skipped (projection, partition, offset, stream, event_type, error, attempts, parked_at)
			SELECT projection, partition, offset, stream, event_type, error, attempts, parked_at FROM esraft_parked
			WHERE projection = ? AND partition = ? AND offset = ?`, p.name, partition, offset); err != nil {
			return err
		}
		return p.journal.unpark(ctx, tx, partition, offset)
	})
	if err != nil {
		return err
	}
	p.unparkedLocked(partition, pe.Stream, 1)
	p.cursorLocked(partition).skipped++
	p.opt.Logger.Warn("projection: parked event skipped by an operator: it will not be handled",
		"partition", partition, "offset", offset, "stream", pe.Stream, "attempts", pe.Attempts, "err", pe.Error)
	return nil
}

// Status reports the projection's progress on this node.
func (r *Local) Status() Status {
	r.mu.Lock()
	p, state, rb, last := r.live, r.state, r.rebuild, r.lastRebuild
	r.mu.Unlock()
	st := Status{Name: r.name, State: state, LastRebuild: last}
	if p != nil {
		live := p.status()
		st.Partitions, st.Lag, st.Parked, st.Skipped = live.Partitions, live.Lag, live.Parked, live.Skipped
	}
	if rb != nil {
		total := st.heads()
		st.Rebuild = &RebuildProgress{Replayed: total - min(total, rb.shadow.status().Lag), Total: total, Started: rb.started}
		st.State = "rebuilding"
	}
	return st
}

// status reports p's progress in every partition of the store. It does
// not wait for a batch in hand, whose handler holds p.mu for as long as it
// runs (a slow handler would hold up /metrics and the admin API): then it
// reports the positions of its last report against the heads of now.
func (p *proc) status() Status {
	if !p.mu.TryLock() {
		p.lastMu.Lock()
		last := p.last
		p.lastMu.Unlock()
		if last != nil {
			return statusAt(p.store, last)
		}
		p.mu.Lock() // no report yet
	}
	pos := make([]position, p.store.Partitions())
	for part := range pos {
		cur := p.cursorLocked(eventstore.Partition(part))
		pos[part] = position{next: cur.next, parked: cur.parkedCount(), skipped: cur.skipped}
	}
	p.mu.Unlock()
	p.lastMu.Lock()
	p.last = pos
	p.lastMu.Unlock()
	return statusAt(p.store, pos)
}

// position is where a processor stood in a partition when it reported.
type position struct {
	next    uint64
	parked  int
	skipped uint64
}

// statusAt is the status of the positions pos (by partition) against the
// store's heads now.
func statusAt(store *eventstore.Store, pos []position) Status {
	var st Status
	for part, c := range pos {
		st.add(partitionStatus(store, eventstore.Partition(part), c.next, c.parked, c.skipped))
	}
	return st
}

// caughtUp reports whether p has handled every partition up to heads.
func (p *proc) caughtUp(heads []uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for part, h := range heads {
		if p.cursorLocked(eventstore.Partition(part)).next < h {
			return false
		}
	}
	return true
}

func (r *Local) heads() ([]uint64, error) {
	heads := make([]uint64, r.store.Partitions())
	for part := range heads {
		h, err := r.store.Head(eventstore.Partition(part))
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
	shadowDB, err := r.db.OpenShadow(ctx)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	sp, err := r.newProc(writer{shadowDB}, shadowDB)
	if err != nil {
		r.mu.Unlock()
		return errors.Join(err, r.db.DropShadow())
	}
	rb := &rebuildState{started: time.Now(), shadow: sp, done: make(chan struct{})}
	r.rebuild = rb
	r.mu.Unlock()
	go func() {
		res := &RebuildResult{Started: rb.started}
		rb.err = r.runRebuild(ctx, sp, res)
		logRebuild(r.opt.Logger, rb.err)
		res.Ended = time.Now()
		if rb.err != nil {
			// Progress as of now: how far the abandoned replay got.
			st := sp.status()
			res.Total = st.heads()
			res.Replayed = res.Total - min(res.Total, st.Lag)
			res.Error = rb.err.Error()
		}
		r.mu.Lock()
		r.rebuild, r.lastRebuild = nil, res
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

// runRebuild replays into sp and switches to it; on success res holds the
// progress as of the switch (every event up to the heads of that instant).
func (r *Local) runRebuild(ctx context.Context, sp *proc, res *RebuildResult) error {
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
			return errors.Join(fmt.Errorf("projection %s: rebuild: %w", r.name, err), r.db.DropShadow())
		case <-ctx.Done():
			stop()
			return errors.Join(ctx.Err(), r.db.DropShadow())
		case <-tick.C:
			heads, err := r.heads()
			if err != nil {
				stop()
				return errors.Join(err, r.db.DropShadow())
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
		return errors.Join(err, r.db.DropShadow())
	}
	res.Replayed, res.Total = sp.progressAt(heads)
	if err := r.db.PromoteShadow(); err != nil {
		return err
	}
	if r.testAfterPromote != nil {
		r.testAfterPromote()
	}
	return nil
}

// progressAt is how many events below heads p has handled, and how many
// there are.
func (p *proc) progressAt(heads []uint64) (handled, total uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for part, h := range heads {
		handled += min(p.cursorLocked(eventstore.Partition(part)).next, h)
		total += h
	}
	return handled, total
}

// checkNotAhead refuses to handle anything while a checkpoint is beyond
// its partition's head once this node holds every acknowledged event: the
// log lost events, or was restored from a copy older than the read model.
// Going on from the checkpoint would skip, silently and for good, the
// events later appended at the offsets in between. Right after a restart
// a replica may still be applying what it held, so the heads are judged
// after a read barrier, retried while no leader is reachable.
func (p *proc) checkNotAhead(ctx context.Context) error {
	ahead := func() (eventstore.Partition, uint64, uint64, bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		for part, cur := range p.cursors {
			if head, err := p.store.Head(part); err == nil && cur.next > head {
				return part, cur.next, head, true
			}
		}
		return 0, 0, 0, false
	}
	if _, _, _, found := ahead(); !found {
		return nil
	}
	bo := backoff.Backoff{Policy: backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}}
	for {
		err := p.store.Barrier(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.opt.Logger.Warn("projection: waiting for the log to check the checkpoints", "err", err)
		if err := backoff.Sleep(ctx, bo.Next()); err != nil {
			return err
		}
	}
	if part, cp, head, found := ahead(); found {
		return fmt.Errorf("%w: projection %s: partition %d is checkpointed at offset %d but the log's head is %d: "+
			"the log lost events or was restored from an older copy; rebuild the projection (Rebuild) to replay "+
			"it from the log, or restore the log that matches the read model", ErrCheckpointAhead, p.name, part, cp, head)
	}
	return nil
}
