package esraftwatermill

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/internal/backoff"
)

// retryDelay spaces the retries of a join or a commit while no leader is
// reachable.
var retryDelay = backoff.Policy{Initial: 100 * time.Millisecond, Max: time.Second}

// member is one subscription in a consumer group: it joins the log's
// group, runs one worker per partition granted to it, releases revoked
// partitions once their worker stopped, and leaves when it ends.
type member struct {
	s     *Subscriber
	topic string
	group string // the log's group: <ConsumerGroup>/<topic>
	id    string
	out   chan<- *message.Message

	workers map[eventstore.Partition]*worker
	release []eventstore.Partition
}

// run is the member's life: sessions until ctx ends (a session ends early
// only if the member was expelled, after a long pause say: it joins
// again).
func (m *member) run(ctx context.Context) {
	m.id = uuid.NewString()
	m.workers = map[eventstore.Partition]*worker{}
	for {
		err := m.session(ctx)
		m.stopAll()
		if ctx.Err() != nil || !errors.Is(err, eventstore.ErrUnknownMember) {
			if ctx.Err() == nil {
				// The store closed, or the log refused the group: nothing
				// to retry. The subscription ends (its channel closes).
				m.s.cfg.Logger.Error("esraftwatermill: consumer group subscription ended", "group", m.group, "member", m.id, "err", err)
			}
			lctx, cancel := context.WithTimeout(context.Background(), m.s.cfg.SessionTimeout)
			m.s.store.LeaveGroup(lctx, m.group, m.id)
			cancel()
			return
		}
		// Expelled (a long pause outlived the session): join again.
		m.s.cfg.Logger.Warn("esraftwatermill: group session ended; joining again", "group", m.group, "member", m.id, "err", err)
	}
}

// transient reports an error a retry may get past: no leader reachable
// for now, or an outcome not known.
func transient(err error) bool {
	return errors.Is(err, eventstore.ErrUnavailable) || errors.Is(err, eventstore.ErrUnknownOutcome)
}

func (m *member) session(ctx context.Context) error {
	var gs eventstore.ConsumerGroupState
	for attempt := 1; ; attempt++ {
		var err error
		if gs, err = m.s.store.JoinGroup(ctx, m.group, m.id, m.s.cfg.SessionTimeout); err == nil {
			break
		}
		if !transient(err) {
			return err
		}
		if err := backoff.Sleep(ctx, retryDelay.Delay(attempt)); err != nil {
			return err
		}
	}
	changed := make(chan struct{}, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go m.watch(wctx, changed)
	hb := time.NewTicker(m.s.cfg.SessionTimeout / 3)
	defer hb.Stop()
	for {
		m.reconcile(ctx, gs)
		if len(m.release) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-changed:
				if s, ok, err := m.s.store.GroupState(m.group); err == nil && ok && s.Generation > gs.Generation {
					gs = s
				}
				continue
			case <-hb.C:
			}
		}
		s, err := m.s.store.Heartbeat(ctx, m.group, m.id, m.release)
		if err != nil {
			if ctx.Err() != nil || !transient(err) {
				return err // expelled (ErrUnknownMember), or the store closed
			}
			continue // no leader for now: the next beat tries again
		}
		m.release = nil
		gs = s
	}
}

// watch signals each new generation of the group this node applies.
func (m *member) watch(ctx context.Context, changed chan<- struct{}) {
	var gen uint64
	for {
		if err := m.s.store.WaitGroupChange(ctx, m.group, gen); err != nil {
			return
		}
		s, ok, err := m.s.store.GroupState(m.group)
		if err != nil || !ok {
			return
		}
		gen = s.Generation
		select {
		case changed <- struct{}{}:
		default:
		}
	}
}

// reconcile starts a worker for each partition granted to the member and
// stops those it must give up, queueing revoked ones for release.
func (m *member) reconcile(ctx context.Context, gs eventstore.ConsumerGroupState) {
	for _, a := range gs.Partitions {
		p := a.Partition
		w := m.workers[p]
		mine := a.Owner == m.id
		switch {
		case mine && !a.Revoking():
			if w != nil && w.gen == a.Generation && !w.ended() {
				continue
			}
			if w != nil {
				w.stop()
			}
			m.workers[p] = m.start(ctx, a)
		case mine && a.Revoking():
			if w != nil {
				w.stop()
				delete(m.workers, p)
			}
			if !slices.Contains(m.release, p) {
				m.release = append(m.release, p)
			}
		case w != nil:
			w.stop()
			delete(m.workers, p)
		}
	}
}

func (m *member) stopAll() {
	for p, w := range m.workers {
		w.stop()
		delete(m.workers, p)
	}
}

// worker delivers one granted partition and commits what was acked.
type worker struct {
	m         *member
	p         eventstore.Partition
	gen       uint64
	committed uint64
	cancel    context.CancelFunc
	done      chan struct{}
}

func (m *member) start(ctx context.Context, a eventstore.PartitionAssignment) *worker {
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{m: m, p: a.Partition, gen: a.Generation, committed: a.Committed, cancel: cancel, done: make(chan struct{})}
	m.s.cfg.Logger.Info("esraftwatermill: partition granted", "group", m.group, "member", m.id, "partition", a.Partition, "from", a.Committed)
	go func() {
		defer close(w.done)
		w.run(wctx)
	}()
	return w
}

func (w *worker) stop() {
	w.cancel()
	<-w.done
}

func (w *worker) ended() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// run delivers the partition's events of the topic from the committed
// offset, committing after each batch, and on stop what was acked.
func (w *worker) run(ctx context.Context) {
	s := w.m.s
	sub, err := s.store.Subscribe(ctx, eventstore.SubscribeOptions{
		Partitions: []eventstore.Partition{w.p}, From: eventstore.Checkpoint{w.p: w.committed},
		EventTypes: []string{w.m.topic}, BatchSize: s.cfg.BatchSize,
	})
	if err != nil {
		s.logEnd(ctx, w.m.topic, err)
		return
	}
	defer sub.Close()
	for {
		evs, err := sub.Poll(ctx, s.cfg.BatchSize)
		if err != nil {
			s.logEnd(ctx, w.m.topic, err)
			return
		}
		next := sub.Checkpoint()[w.p]
		for _, ev := range evs {
			if !s.deliver(ctx, ev, w.m.out) {
				w.commit(ev.Offset) // everything before ev was acked
				return
			}
		}
		if !w.commit(next) {
			return
		}
	}
}

// commit records next as the partition's next offset for the group,
// retrying while no leader is reachable. It returns false if the member no
// longer holds the partition at its generation (or the store closed):
// the worker must stop.
func (w *worker) commit(next uint64) bool {
	if next <= w.committed {
		return true
	}
	s := w.m.s
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.SessionTimeout)
		_, err := s.store.CommitOffsets(ctx, w.m.group, w.m.id, []eventstore.OffsetCommit{{Partition: w.p, Generation: w.gen, Offset: next}})
		cancel()
		var stale *eventstore.StaleGenerationError
		switch {
		case err == nil:
			w.committed = next
			return true
		case errors.As(err, &stale), errors.Is(err, eventstore.ErrUnknownMember), errors.Is(err, eventstore.ErrClosed):
			s.cfg.Logger.Info("esraftwatermill: partition lost; offset not committed", "group", w.m.group, "partition", w.p, "offset", next, "err", err)
			return false
		case attempt >= 5:
			s.cfg.Logger.Warn("esraftwatermill: offset commit failed; its messages will be delivered again", "group", w.m.group, "partition", w.p, "offset", next, "err", err)
			return false
		}
		time.Sleep(retryDelay.Delay(attempt))
	}
}
