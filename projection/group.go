package projection

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/internal/backoff"
)

// GroupOptions tune a group runner.
type GroupOptions struct {
	Options
	// SessionTimeout: a member silent this long is removed and its
	// partitions reassigned (default 10 s). Members heartbeat every third
	// of it.
	SessionTimeout time.Duration
	// DB, if set, is the member's database (a projection/sqlite *DB, say):
	// each batch is handled in one of its transactions, committed before
	// the offsets are.
	DB Updater
	// Start is where the group starts if this member's join creates it
	// (eventstore.StartPosition: earliest by default, latest, a time or
	// offsets). A group that exists resumes from its committed offsets;
	// move those with ResetGroup.
	Start eventstore.StartPosition
	// StopTimeout bounds what a member does once it stops or loses a
	// partition, after its handlers returned: one attempt to commit a
	// batch handled in full, and leaving the group (default a third of
	// SessionTimeout).
	StopTimeout time.Duration
	// OnGrant, if set, is called when the member starts working on a
	// partition granted to it, before any of the partition's events is
	// handled: the grant's generation (which the member's commits carry)
	// and the offset it resumes from. The grant had applied on this node
	// when it is called.
	OnGrant func(partition eventstore.Partition, generation, from uint64)
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
	Partition  eventstore.Partition
	Generation uint64 // the grant generation the commit carried
	Offset     uint64 // the next offset to handle, committed
	// Start is taken before the request is sent, End once its outcome is
	// known: the log applied the commit, if it did, in between.
	Start, End time.Time
	// Err is nil if the commit was acknowledged, a
	// *eventstore.StaleGenerationError if it was rejected because the
	// member no longer holds the partition at Generation, and another
	// error if the outcome is unknown (no leader reached before the
	// timeout) or the store is closed.
	Err error
}

// Group is one member of a consumer group of handlers.
type Group struct {
	store  *eventstore.Store
	group  string
	member string
	h      Handler
	opt    GroupOptions

	mu       sync.Mutex
	state    string
	gs       eventstore.ConsumerGroupState
	workers  map[eventstore.Partition]*worker
	releases []eventstore.Partition // revoked partitions whose workers stopped, to release

	// testHooks' testBeforeCommit runs after a batch is handled and before
	// its offsets are committed.
	testHooks
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
	if opt.StopTimeout <= 0 {
		opt.StopTimeout = opt.SessionTimeout / 3
	}
	opt.Logger = runnerLogger(opt.Logger, store, "group", group, "member", member)
	return &Group{store: store, group: group, member: member, h: h, opt: opt, state: "starting", workers: map[eventstore.Partition]*worker{}}
}

// Run joins the group and handles the partitions assigned to this member
// until ctx ends; then it stops its workers and leaves the group, so its
// partitions move at once. A worker that stops (here, or because its
// partition moves to another member) cancels its handler's ctx and gives
// back the events in hand: those not handled in full are not committed,
// so the partition's next owner handles them; none is parked for it. Run
// returns once the handlers have returned, plus at most two StopTimeouts
// (a last commit and the leave).
func (g *Group) Run(ctx context.Context) error {
	defer g.setState("stopped")
	for {
		err := g.session(ctx)
		g.stopAll(context.Background())
		if ctx.Err() != nil {
			if !g.testNoLeave {
				lctx, cancel := context.WithTimeout(context.Background(), g.opt.StopTimeout)
				g.store.LeaveGroup(lctx, g.group, g.member)
				cancel()
			}
			return nil
		}
		if !errors.Is(err, eventstore.ErrUnknownMember) {
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
	var gs eventstore.ConsumerGroupState
	for {
		var err error
		gs, err = g.store.JoinGroupAt(ctx, g.group, g.member, g.opt.SessionTimeout, g.opt.Start)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		g.opt.Logger.Debug("projection: join failed; retrying", "err", err)
		if err := backoff.Sleep(ctx, g.opt.delay(1)); err != nil {
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
			if s, ok, err := g.store.GroupState(g.group); err == nil && ok && s.Generation > gs.Generation {
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
		s, err := g.store.Heartbeat(ctx, g.group, g.member, release)
		if err != nil {
			if errors.Is(err, eventstore.ErrUnknownMember) || ctx.Err() != nil {
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
		if err := g.store.WaitGroupChange(ctx, g.group, gen); err != nil {
			return
		}
		s, ok, err := g.store.GroupState(g.group)
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
func (g *Group) reconcile(ctx context.Context, gs eventstore.ConsumerGroupState) {
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
				w.stop() // gives back what it has not handled
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
	g.workers = map[eventstore.Partition]*worker{}
	g.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
}

// worker handles one owned partition: a runner core whose progress is
// committed to the log after each batch, with the generation of the
// grant.
type worker struct {
	core
	g      *Group
	p      eventstore.Partition
	gen    uint64
	cancel context.CancelFunc
	done   chan struct{}
	lost   bool
}

func (g *Group) start(ctx context.Context, a eventstore.PartitionAssignment) {
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{g: g, p: a.Partition, gen: a.Generation, cancel: cancel, done: make(chan struct{}), core: core{
		name: g.group, h: g.h, opt: &g.opt.Options, store: g.store, hooks: &g.testHooks,
	}}
	if g.opt.DB != nil {
		w.writer = g.opt.DB
	}
	cur := w.cursorLocked(a.Partition)
	cur.next = a.Committed
	for _, pr := range a.Parked {
		cur.parked[pr.Key]++
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

// stop cancels the worker's handler and waits for it to give back the
// events it has not handled.
func (w *worker) stop() {
	w.cancel()
	<-w.done
}

// run handles the partition until ctx ends or the worker must stop (it
// lost the partition, the database failed, or the crash hook fired).
func (w *worker) run(ctx context.Context) {
	err := w.follow(ctx, []eventstore.Partition{w.p}, eventstore.Checkpoint{w.p: w.next()}, func(ctx context.Context, _ eventstore.Partition, evs []eventstore.Event, after uint64) error {
		// ctx ends when the member stops or loses the partition: the
		// handler sees it, and a batch not handled in full is not
		// committed (its events go to the next owner); one handled in
		// full still gets one commit attempt (see commit).
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(evs) == 0 { // only skipped events: commit how far they go
			moved, _ := w.advanceLocked(ctx, w.p, after)
			if !moved {
				return nil
			}
			return w.commit(ctx, eventstore.OffsetCommit{Partition: w.p, Generation: w.gen, Offset: after})
		}
		next := max(after, evs[len(evs)-1].Offset+1)
		parks, err := w.handleBatchLocked(ctx, evs, after)
		if err != nil {
			return err
		}
		// The log's offsets are committed once, after the whole batch.
		if err := w.commit(ctx, eventstore.OffsetCommit{Partition: w.p, Generation: w.gen, Offset: next, Park: parkedRecords(parks)}); err != nil {
			return err
		}
		w.committedLocked(w.p, next, nil)
		return nil
	})
	if ctx.Err() == nil && !w.lost {
		w.g.opt.Logger.Warn("projection: worker stopped", "partition", w.p, "err", err)
	}
}

// next is the offset the worker resumes from.
func (w *worker) next() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cursorLocked(w.p).next
}

func parkedRecords(parks []parking) []eventstore.ParkedRecord {
	var out []eventstore.ParkedRecord
	for _, p := range parks {
		out = append(out, eventstore.ParkedRecord{Offset: p.Offset, Key: p.Stream, Error: p.Error, Attempts: p.Attempts})
	}
	return out
}

// commit records progress in the log, retrying while no leader is
// reachable; it fails if the partition was lost (stale generation), the
// store closed or ctx ended. Once ctx has ended (the worker is stopping,
// its work done) it makes one last attempt, bounded by StopTimeout, so
// that the next owner does not handle the work again.
func (w *worker) commit(ctx context.Context, c eventstore.OffsetCommit) error {
	for attempt := 1; ; attempt++ {
		actx, timeout := ctx, w.g.opt.SessionTimeout
		if ctx.Err() != nil {
			actx, timeout = context.WithoutCancel(ctx), w.g.opt.StopTimeout
		}
		cctx, cancel := context.WithTimeout(actx, timeout)
		start := time.Now()
		_, err := w.g.store.CommitOffsets(cctx, w.g.group, w.g.member, []eventstore.OffsetCommit{c})
		cancel()
		if w.g.opt.OnCommit != nil {
			w.g.opt.OnCommit(CommitAttempt{Partition: c.Partition, Generation: c.Generation, Offset: c.Offset, Start: start, End: time.Now(), Err: err})
		}
		var sge *eventstore.StaleGenerationError
		switch {
		case err == nil:
			return nil
		case errors.Is(err, eventstore.ErrCommitBehind):
			// Only a reset moves offsets back, and it waits for the group
			// to have no live member: stop, and start again from the log.
			w.g.opt.Logger.Error("projection: committed offset moved back under a live member; restarting the partition", "partition", c.Partition, "offset", c.Offset, "err", err)
			return err
		case errors.As(err, &sge), errors.Is(err, eventstore.ErrClosed):
			w.g.opt.Logger.Info("projection: partition lost; offsets not committed", "partition", c.Partition, "offset", c.Offset, "err", err)
			w.lost = true
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		w.g.opt.Logger.Debug("projection: offset commit failed; retrying", "partition", c.Partition, "attempts", attempt, "err", err)
		if err := backoff.Sleep(ctx, w.g.opt.delay(attempt)); err != nil {
			return err
		}
	}
}

// retryParked carries out what the group was asked of its parked records
// (skip, then retry), on the partitions this member owns.
func (g *Group) retryParked(ctx context.Context, gs eventstore.ConsumerGroupState) {
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
		if slices.ContainsFunc(a.Parked, func(pr eventstore.ParkedRecord) bool { return pr.Skip }) {
			w.skip(ctx, a.Parked)
		}
		for _, pr := range a.Parked {
			if pr.Retry && !pr.Skip {
				w.retry(ctx, a.Parked, pr.Key)
				break
			}
		}
	}
}

// retry handles the parked records of key again, oldest first, stopping
// at the first that fails; the handled ones are unparked. Records to be
// skipped are left to skip.
func (w *worker) retry(ctx context.Context, parked []eventstore.ParkedRecord, key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var chain []eventstore.ParkedRecord
	var offsets []uint64
	for _, pr := range parked {
		if pr.Key == key && !pr.Skip {
			chain, offsets = append(chain, pr), append(offsets, pr.Offset)
		}
	}
	handled, failed, err := w.retryParkedLocked(ctx, w.p, offsets)
	if err != nil {
		return
	}
	var again []eventstore.ParkedRecord
	if failed != nil {
		pr := chain[handled]
		pr.Error, pr.Attempts, pr.Retry = fmt.Sprint(failed), pr.Attempts+1, false
		again = append(again, pr)
	}
	c := eventstore.OffsetCommit{Partition: w.p, Generation: w.gen, Offset: w.cursorLocked(w.p).next, Park: again, Unpark: offsets[:handled]}
	if w.commit(ctx, c) == nil {
		w.unparkedLocked(w.p, key, handled)
	}
}

// skip unparks, unhandled, the parked records an operator asked to skip;
// the log counts them in the partition's Skipped as it applies the
// commit. Each is logged: an event the group will never handle.
func (w *worker) skip(ctx context.Context, parked []eventstore.ParkedRecord) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var skips []eventstore.ParkedRecord
	var offsets []uint64
	for _, pr := range parked {
		if pr.Skip {
			skips, offsets = append(skips, pr), append(offsets, pr.Offset)
		}
	}
	c := eventstore.OffsetCommit{Partition: w.p, Generation: w.gen, Offset: w.cursorLocked(w.p).next, Unpark: offsets}
	if w.commit(ctx, c) != nil {
		return // asked again at the next heartbeat, by this owner or the next
	}
	for _, pr := range skips {
		w.unparkedLocked(w.p, pr.Key, 1)
		w.opt.Logger.Warn("projection: parked event skipped by an operator: it will not be handled",
			"partition", w.p, "offset", pr.Offset, "stream", pr.Key, "attempts", pr.Attempts, "err", pr.Error)
	}
}

// Parked lists the group's parked records, as this node has applied the
// group's state.
func (g *Group) Parked() ([]ParkedEvent, error) {
	gs, ok, err := g.store.GroupState(g.group)
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
func (g *Group) Retry(ctx context.Context, partition eventstore.Partition, offset uint64) error {
	return g.store.RetryParked(ctx, g.group, partition, offset)
}

// Skip asks the owner of partition (any member, on any node) to drop the
// parked record at offset without handling it: an operator's decision
// that the event is lost to this group. The owner unparks it at its next
// heartbeat and logs it at WARN; Status counts it in Skipped. Records
// parked behind it on the same stream stay parked (retry or skip them
// too). It fails with ErrNotParked if, once this node has caught up with
// the log, the group has no parked record there.
func (g *Group) Skip(ctx context.Context, partition eventstore.Partition, offset uint64) error {
	if err := g.store.Barrier(ctx); err != nil {
		return err
	}
	gs, _, err := g.store.GroupState(g.group)
	if err != nil {
		return err
	}
	for _, a := range gs.Partitions {
		for _, pr := range a.Parked {
			if a.Partition == partition && pr.Offset == offset {
				return g.store.SkipParked(ctx, g.group, partition, offset)
			}
		}
	}
	return fmt.Errorf("%w: group %s, partition %d offset %d", ErrNotParked, g.group, partition, offset)
}

// Reset moves every partition of the group to start (earliest: replay
// everything; latest: skip what is there; a time; offsets) while no member
// runs, this one included: otherwise it fails with
// eventstore.ErrGroupActive and changes nothing. Members started later
// resume from there. Parked events at or after a partition's new offset
// are dropped, since they will be handled again.
func (g *Group) Reset(ctx context.Context, start eventstore.StartPosition) error {
	_, err := g.store.ResetGroup(ctx, g.group, start)
	return err
}

// Delete removes the group's state from the log (offsets, parked events)
// while no member runs: otherwise it fails with eventstore.ErrGroupActive.
// A member started later creates the group anew, at GroupOptions.Start.
func (g *Group) Delete(ctx context.Context) error {
	return g.store.DeleteGroup(ctx, g.group)
}

// Status reports the group as this node sees it: every partition's owner
// position (committed offset), head, lag and parked count.
func (g *Group) Status() Status {
	g.mu.Lock()
	state := g.state
	g.mu.Unlock()
	st := Status{Name: g.group, State: state}
	gs, ok, err := g.store.GroupState(g.group)
	if err != nil || !ok {
		return st
	}
	for _, a := range gs.Partitions {
		st.add(partitionStatus(g.store, a.Partition, a.Committed, len(a.Parked), a.Skipped))
	}
	return st
}

// Assignment returns the group's state as this node has applied it:
// generation, members, and each partition's owner.
func (g *Group) Assignment() (eventstore.ConsumerGroupState, bool) {
	gs, ok, _ := g.store.GroupState(g.group)
	return gs, ok
}

// Owned returns the partitions this member is working on.
func (g *Group) Owned() []eventstore.Partition {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []eventstore.Partition
	for p := range g.workers {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
