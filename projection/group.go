package projection

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/raftlog"
)

// GroupOptions tune a group runner.
type GroupOptions struct {
	Options
	// SessionTimeout: a member silent this long is removed and its
	// partitions reassigned (default 10 s). Members heartbeat every third
	// of it.
	SessionTimeout time.Duration
	// DB, if set, is the member's SQLite database: each batch is handled
	// in one of its transactions, committed before the offsets are.
	DB *DB
	// OnGrant, if set, is called when the member starts working on a
	// partition granted to it, before any of the partition's events is
	// handled: the grant's generation (which the member's commits carry)
	// and the offset it resumes from. The grant had applied on this node
	// when it is called.
	OnGrant func(partition int, generation, from uint64)
	// OnCommit, if set, is called after every attempt to commit a
	// partition's offsets, acknowledged or not (see CommitAttempt).
	//
	// Both run on the member's goroutines, one partition's calls in order;
	// they must be quick and safe for concurrent use. They are for
	// observing a member (metrics, tests), not for steering it.
	OnCommit func(CommitAttempt)
}

// CommitAttempt is one attempt of a group member to commit a partition's
// offsets, as seen by GroupOptions.OnCommit.
type CommitAttempt struct {
	Partition  int
	Generation uint64 // the grant generation the commit carried
	Offset     uint64 // the next offset to handle, committed
	// Start is taken before the request is sent, End once its outcome is
	// known: the log applied the commit, if it did, in between.
	Start, End time.Time
	// Err is nil if the commit was acknowledged, a
	// *raftlog.StaleGenerationError if it was rejected because the member
	// no longer holds the partition at Generation, and another error if
	// the outcome is unknown (no leader reached before the timeout) or the
	// log is closed.
	Err error
}

// Group is one member of a consumer group of handlers.
type Group struct {
	store  *eventstore.Store
	log    *raftlog.Log
	group  string
	member string
	h      Handler
	opt    GroupOptions

	mu       sync.Mutex
	state    string
	gs       raftlog.GroupState
	workers  map[int]*worker
	releases []int // revoked partitions whose workers stopped, to release

	// testBeforeCommit, if set, runs after a batch is handled and before
	// its offsets are committed; an error stops the worker there (a crash
	// between handling and commit).
	testBeforeCommit func() error
	// testBeforeHeartbeat runs before each heartbeat (a test blocks it to
	// pause the member); testNoLeave skips leaving on stop (a crash).
	testBeforeHeartbeat func()
	testNoLeave         bool
}

// NewGroup returns member of consumer group group handling events with h.
// Member IDs must be unique in the group and stable for a process (the
// node ID, say). Run starts it.
func NewGroup(store *eventstore.Store, group, member string, h Handler, opt GroupOptions) *Group {
	opt.defaults()
	if opt.SessionTimeout <= 0 {
		opt.SessionTimeout = 10 * time.Second
	}
	opt.Logger = runnerLogger(opt.Logger, store, "group", group, "member", member)
	return &Group{store: store, log: store.Log(), group: group, member: member, h: h, opt: opt, state: "starting", workers: map[int]*worker{}}
}

// Run joins the group and handles the partitions assigned to this member
// until ctx ends; then it stops its workers (each finishing its batch in
// hand and committing it) and leaves the group, so its partitions move at
// once.
func (g *Group) Run(ctx context.Context) error {
	defer g.setState("stopped")
	for {
		err := g.session(ctx)
		g.stopAll(context.Background())
		if ctx.Err() != nil {
			if !g.testNoLeave {
				lctx, cancel := context.WithTimeout(context.Background(), g.opt.SessionTimeout)
				g.log.LeaveGroup(lctx, g.group, g.member)
				cancel()
			}
			return nil
		}
		if !errors.Is(err, raftlog.ErrUnknownMember) {
			return err
		}
		// Our session expired (a long pause): join again.
		g.opt.Logger.Warn("projection: group session expired; joining again", "err", err)
	}
}

func (g *Group) setState(s string) {
	g.mu.Lock()
	g.state = s
	g.mu.Unlock()
}

// session is one membership: join, then heartbeat and follow the
// assignment until ctx ends or the member is expelled.
func (g *Group) session(ctx context.Context) error {
	var gs raftlog.GroupState
	for {
		var err error
		gs, err = g.log.JoinGroup(ctx, g.group, g.member, g.opt.SessionTimeout)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		g.opt.Logger.Debug("projection: join failed; retrying", "err", err)
		if err := sleep(ctx, g.opt.delay(1)); err != nil {
			return err
		}
	}
	g.setState("running")
	changed := make(chan uint64, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go g.watch(wctx, changed)
	hb := time.NewTicker(g.opt.SessionTimeout / 3)
	defer hb.Stop()
	for {
		g.reconcile(ctx, gs)
		g.mu.Lock()
		release := g.releases
		g.mu.Unlock()
		if len(release) > 0 {
			select {
			case <-hb.C:
			default:
			}
			goto beat
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
			if s, ok, err := g.log.GroupState(g.group); err == nil && ok && s.Generation > gs.Generation {
				gs = s
			}
			continue
		case <-hb.C:
		}
	beat:
		if g.testBeforeHeartbeat != nil {
			g.testBeforeHeartbeat()
		}
		g.mu.Lock()
		release = g.releases
		g.releases = nil
		g.mu.Unlock()
		s, err := g.log.Heartbeat(ctx, g.group, g.member, release)
		if err != nil {
			if errors.Is(err, raftlog.ErrUnknownMember) || ctx.Err() != nil {
				return err
			}
			g.mu.Lock()
			g.releases = append(g.releases, release...)
			g.mu.Unlock()
			g.opt.Logger.Debug("projection: heartbeat failed; retrying at the next beat", "err", err)
			continue // no leader for now: try at the next beat
		}
		gs = s
		g.retryParked(ctx, gs)
	}
}

// watch signals when this node applies a new generation of the group.
func (g *Group) watch(ctx context.Context, changed chan<- uint64) {
	var gen uint64
	for {
		if err := g.log.WaitGroupChange(ctx, g.group, gen); err != nil {
			return
		}
		s, ok, err := g.log.GroupState(g.group)
		if err != nil || !ok {
			return
		}
		gen = s.Generation
		select {
		case changed <- gen:
		default:
		}
	}
}

// reconcile starts workers for partitions granted to this member and
// stops those it must give up.
func (g *Group) reconcile(ctx context.Context, gs raftlog.GroupState) {
	g.mu.Lock()
	g.gs = gs
	g.mu.Unlock()
	for _, a := range gs.Partitions {
		p := a.Partition
		g.mu.Lock()
		w := g.workers[p]
		g.mu.Unlock()
		mine := a.Owner == g.member
		switch {
		case mine && !a.Revoking():
			if w != nil && w.gen == a.Generation && !w.failed() {
				continue
			}
			if w != nil {
				w.stop()
			}
			g.start(ctx, a)
		case mine && a.Revoking():
			if w != nil {
				g.opt.Logger.Info("projection: partition revoked; releasing it", "partition", p, "generation", a.Generation)
				w.stop() // finishes its batch and commits it
			}
			g.mu.Lock()
			delete(g.workers, p)
			if !slices.Contains(g.releases, p) {
				g.releases = append(g.releases, p)
			}
			g.mu.Unlock()
		case w != nil:
			g.opt.Logger.Info("projection: partition moved to another member", "partition", p, "owner", a.Owner)
			w.stop()
			g.mu.Lock()
			delete(g.workers, p)
			g.mu.Unlock()
		}
	}
}

func (g *Group) stopAll(ctx context.Context) {
	g.mu.Lock()
	ws := g.workers
	g.workers = map[int]*worker{}
	g.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
}

// worker handles one owned partition.
type worker struct {
	g      *Group
	p      int
	gen    uint64
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex // one batch or retry at a time
	next   uint64
	parked map[string]bool // streams with parked events
	count  int
	lost   bool
}

func (g *Group) start(ctx context.Context, a raftlog.PartitionAssignment) {
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{g: g, p: a.Partition, gen: a.Generation, cancel: cancel, done: make(chan struct{}), next: a.Committed, parked: map[string]bool{}}
	for _, pr := range a.Parked {
		w.parked[pr.Key] = true
		w.count++
	}
	g.mu.Lock()
	g.workers[a.Partition] = w
	g.mu.Unlock()
	g.opt.Logger.Info("projection: partition granted", "partition", a.Partition, "generation", a.Generation, "from", a.Committed)
	if g.opt.OnGrant != nil {
		g.opt.OnGrant(a.Partition, a.Generation, a.Committed)
	}
	go func() {
		defer close(w.done)
		w.run(wctx)
	}()
}

// failed reports a worker that stopped on its own (its database failed)
// while its partition is still granted: it is started again.
func (w *worker) failed() bool {
	select {
	case <-w.done:
		return !w.lost
	default:
		return false
	}
}

// stop makes the worker finish (or abandon) its batch and waits for it.
func (w *worker) stop() {
	w.cancel()
	<-w.done
}

func (w *worker) run(ctx context.Context) {
	o := w.g.opt
	sub, err := w.g.store.Subscribe(ctx, eventstore.SubscribeOptions{
		Partitions: []int{w.p}, From: eventstore.Checkpoint{w.p: w.next},
		Categories: o.Categories, EventTypes: o.EventTypes, BatchSize: o.BatchSize,
	})
	if err != nil {
		o.Logger.Warn("projection: worker stopped: subscribe", "partition", w.p, "err", err)
		return
	}
	defer sub.Close()
	for {
		batch, err := sub.Poll(ctx, o.BatchSize)
		if err != nil {
			if ctx.Err() == nil {
				o.Logger.Warn("projection: worker stopped: read", "partition", w.p, "err", err)
			}
			return
		}
		if len(batch) == 0 { // only skipped events: commit how far they go
			next := sub.Checkpoint()[w.p]
			w.mu.Lock()
			ok := next <= w.next || w.commit(context.WithoutCancel(ctx), raftlog.OffsetCommit{Partition: w.p, Generation: w.gen, Offset: next})
			if ok {
				w.next = max(w.next, next)
			}
			w.mu.Unlock()
			if !ok {
				return
			}
			continue
		}
		// The batch in hand is finished even if ctx ends meanwhile: a
		// revoked partition is committed before it is released.
		if !w.handle(context.WithoutCancel(ctx), batch, sub.Checkpoint()[w.p]) {
			return
		}
	}
}

// handle handles a batch and commits its offsets; false means the worker
// must stop (it lost the partition, the database failed, or the crash hook
// fired). The events go through the handler in one transaction up to the
// first that fails; that transaction commits, and the failed event is
// retried alone with backoff, each attempt in a transaction of its own and
// none held while waiting (other partitions share the database's one
// writer), then parked if it keeps failing; the rest of the batch follows.
// The log's offsets are committed once, after the whole batch.
func (w *worker) handle(ctx context.Context, evs []eventstore.Event, after uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	next := max(after, evs[len(evs)-1].Offset+1)
	var park []raftlog.ParkedRecord
	for len(evs) > 0 {
		n, herr, err := w.handlePrefix(ctx, evs, &park)
		if err != nil {
			w.g.opt.Logger.Warn("projection: worker stopped: batch failed", "partition", w.p, "err", err)
			return false
		}
		if herr == nil {
			break
		}
		if !w.retryOrPark(ctx, evs[n], herr, &park) {
			return false
		}
		evs = evs[n+1:]
	}
	if !w.commit(ctx, raftlog.OffsetCommit{Partition: w.p, Generation: w.gen, Offset: next, Park: park}) {
		return false
	}
	w.next = next
	w.count += len(park)
	return true
}

// handlePrefix handles evs in one transaction until the handler fails on
// one: it returns that event's index and error (its writes rolled back,
// those of the events before it committed), or len(evs) and nil. Events of
// a stream parked earlier are parked behind it, unhandled. err is a
// failure of the transaction: nothing was committed.
func (w *worker) handlePrefix(ctx context.Context, evs []eventstore.Event, park *[]raftlog.ParkedRecord) (n int, herr, err error) {
	var waiting []raftlog.ParkedRecord
	err = w.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for n = 0; n < len(evs); n++ {
			ev := evs[n]
			if w.parked[ev.Stream] {
				waiting = append(waiting, raftlog.ParkedRecord{Offset: ev.Offset, Key: ev.Stream, Error: "waiting behind an earlier parked event of its stream"})
				continue
			}
			if herr = w.try(ctx, tx, ev); herr != nil {
				break
			}
		}
		if w.g.testBeforeCommit != nil {
			return w.g.testBeforeCommit()
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	*park = append(*park, waiting...)
	return n, herr, nil
}

// retryOrPark handles ev again after it failed with herr, up to
// MaxAttempts in all, sleeping between attempts outside any transaction,
// and parks it (and, from then on, its stream) if it still fails. false
// means the worker must stop: ctx ended or the database failed.
func (w *worker) retryOrPark(ctx context.Context, ev eventstore.Event, herr error, park *[]raftlog.ParkedRecord) bool {
	for attempt := 2; attempt <= w.g.opt.MaxAttempts; attempt++ {
		w.g.opt.Logger.Debug("projection: handler failed; retrying",
			"partition", w.p, "offset", ev.Offset, "stream", ev.Stream, "attempts", attempt-1, "err", herr)
		if sleep(ctx, w.g.opt.delay(attempt-1)) != nil {
			return false
		}
		err := w.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			herr = w.g.h(ctx, tx, ev)
			return herr
		})
		if err == nil {
			return true
		}
		if herr == nil {
			w.g.opt.Logger.Warn("projection: worker stopped: retry failed", "partition", w.p, "err", err)
			return false // the database failed, not the handler
		}
	}
	w.g.opt.Logger.Warn("projection: event parked",
		"partition", w.p, "offset", ev.Offset, "stream", ev.Stream, "attempts", w.g.opt.MaxAttempts, "err", herr)
	*park = append(*park, raftlog.ParkedRecord{Offset: ev.Offset, Key: ev.Stream, Error: herr.Error(), Attempts: w.g.opt.MaxAttempts})
	w.parked[ev.Stream] = true
	return true
}

// try runs the handler on ev inside a savepoint of tx (if any), so a
// failed attempt leaves no trace.
func (w *worker) try(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
	if tx == nil {
		return w.g.h(ctx, nil, ev)
	}
	if _, err := tx.ExecContext(ctx, "SAVEPOINT ev"); err != nil {
		return err
	}
	if herr := w.g.h(ctx, tx, ev); herr != nil {
		if _, err := tx.ExecContext(ctx, "ROLLBACK TO ev; RELEASE ev"); err != nil {
			return errors.Join(herr, err)
		}
		return herr
	}
	_, err := tx.ExecContext(ctx, "RELEASE ev")
	return err
}

// inTx runs fn in a transaction of the member's database, ctx carrying
// the transaction's statement cache (see Exec), or with a nil tx if the
// member has none.
func (w *worker) inTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if w.g.opt.DB == nil {
		return fn(ctx, nil)
	}
	return w.g.opt.DB.Update(ctx, func(tx *sql.Tx) error { return fn(withTxStmts(ctx, tx), tx) })
}

// commit records progress in the log, retrying while no leader is
// reachable; false if the partition was lost (stale generation).
func (w *worker) commit(ctx context.Context, c raftlog.OffsetCommit) bool {
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, w.g.opt.SessionTimeout)
		start := time.Now()
		_, err := w.g.log.CommitOffsets(cctx, w.g.group, w.g.member, []raftlog.OffsetCommit{c})
		cancel()
		if w.g.opt.OnCommit != nil {
			w.g.opt.OnCommit(CommitAttempt{Partition: c.Partition, Generation: c.Generation, Offset: c.Offset, Start: start, End: time.Now(), Err: err})
		}
		var sge *raftlog.StaleGenerationError
		switch {
		case err == nil:
			return true
		case errors.As(err, &sge), errors.Is(err, raftlog.ErrClosed):
			w.g.opt.Logger.Info("projection: partition lost; offsets not committed", "partition", c.Partition, "offset", c.Offset, "err", err)
			w.lost = true
			return false
		}
		w.g.opt.Logger.Debug("projection: offset commit failed; retrying", "partition", c.Partition, "attempts", attempt, "err", err)
		if sleep(ctx, w.g.opt.delay(attempt)) != nil {
			return false
		}
	}
}

// retryParked handles parked records the group was asked to retry, on
// the partitions this member owns.
func (g *Group) retryParked(ctx context.Context, gs raftlog.GroupState) {
	for _, a := range gs.Partitions {
		if a.Owner != g.member || a.Revoking() {
			continue
		}
		g.mu.Lock()
		w := g.workers[a.Partition]
		g.mu.Unlock()
		if w == nil || w.gen != a.Generation {
			continue
		}
		for _, pr := range a.Parked {
			if pr.Retry {
				w.retry(ctx, a.Parked, pr.Key)
				break
			}
		}
	}
}

// retry handles the parked records of key again, oldest first, stopping
// at the first that fails; the handled ones are unparked.
func (w *worker) retry(ctx context.Context, parked []raftlog.ParkedRecord, key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var unpark []uint64
	var again []raftlog.ParkedRecord
	for _, pr := range parked {
		if pr.Key != key {
			continue
		}
		evs, _, err := w.g.store.ReadPartition(ctx, w.p, pr.Offset, 1)
		if err != nil {
			w.g.opt.Logger.Warn("projection: retry of parked events: read", "partition", w.p, "offset", pr.Offset, "err", err)
			return
		}
		var herr error
		err = w.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if len(evs) == 1 && evs[0].Offset == pr.Offset {
				herr = w.try(ctx, tx, evs[0])
			}
			return herr
		})
		if err != nil {
			w.g.opt.Logger.Warn("projection: parked event failed again", "partition", w.p, "offset", pr.Offset, "stream", key, "err", err)
			pr.Error, pr.Attempts, pr.Retry = fmt.Sprint(err), pr.Attempts+1, false
			again = append(again, pr)
			break
		}
		unpark = append(unpark, pr.Offset)
	}
	if w.commit(ctx, raftlog.OffsetCommit{Partition: w.p, Generation: w.gen, Offset: w.next, Park: again, Unpark: unpark}) {
		w.count -= len(unpark)
		if len(again) == 0 {
			delete(w.parked, key)
		}
	}
}

// Parked lists the group's parked records, as this node has applied the
// group's state.
func (g *Group) Parked() ([]ParkedEvent, error) {
	gs, ok, err := g.log.GroupState(g.group)
	if err != nil || !ok {
		return nil, err
	}
	var out []ParkedEvent
	for _, a := range gs.Partitions {
		for _, pr := range a.Parked {
			out = append(out, ParkedEvent{Partition: a.Partition, Offset: pr.Offset, Stream: pr.Key, Error: pr.Error, Attempts: pr.Attempts})
		}
	}
	return out, nil
}

// Retry asks the owner of partition (any member, on any node) to handle
// the parked records of the stream of the parked record at offset again.
func (g *Group) Retry(ctx context.Context, partition int, offset uint64) error {
	return g.log.RetryParked(ctx, g.group, partition, offset)
}

// Status reports the group as this node sees it: every partition's owner
// position (committed offset), head, lag and parked count.
func (g *Group) Status() Status {
	g.mu.Lock()
	state := g.state
	g.mu.Unlock()
	st := Status{Name: g.group, State: state}
	gs, ok, err := g.log.GroupState(g.group)
	if err != nil || !ok {
		return st
	}
	lag := g.log.Lag(gs)
	for i, a := range gs.Partitions {
		head, _ := g.store.Head(a.Partition)
		st.Partitions = append(st.Partitions, PartitionStatus{Partition: a.Partition, Position: a.Committed, Head: head, Lag: lag[i], Parked: len(a.Parked)})
		st.Lag += lag[i]
		st.Parked += len(a.Parked)
	}
	return st
}

// Assignment returns the group's state as this node has applied it:
// generation, members, and each partition's owner.
func (g *Group) Assignment() (raftlog.GroupState, bool) {
	gs, ok, _ := g.log.GroupState(g.group)
	return gs, ok
}

// Owned returns the partitions this member is working on.
func (g *Group) Owned() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []int
	for p := range g.workers {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
