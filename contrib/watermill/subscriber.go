package esraftwatermill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/internal/backoff"
	"github.com/esraft/esraft/raftlog"
)

// SubscriberConfig configures a Subscriber. The zero value is usable.
type SubscriberConfig struct {
	// ConsumerGroup, if set, makes every subscription a member of this
	// consumer group (see the package documentation). Empty: every
	// subscription reads its topic from the beginning of the log.
	ConsumerGroup string
	// SessionTimeout: a group member silent this long is removed and its
	// partitions given to the others (default 10 s). Members heartbeat
	// every third of it; a member that closes leaves at once.
	SessionTimeout time.Duration
	// NackDelay is the wait before a nacked message is sent again
	// (default 100 ms).
	NackDelay time.Duration
	// BatchSize is how many events are read from a partition at once
	// (default 256).
	BatchSize int
	// Logger receives the subscriptions' lines (partitions granted and
	// lost at INFO, failed commits at WARN). Nil: the store's logger.
	Logger *slog.Logger
}

// Subscriber delivers a store's events as watermill messages. It is safe
// for concurrent use; Close ends every subscription and does not close the
// store.
type Subscriber struct {
	store *eventstore.Store
	cfg   SubscriberConfig

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
}

var _ message.Subscriber = (*Subscriber)(nil)

// NewSubscriber returns a subscriber reading store.
func NewSubscriber(store *eventstore.Store, cfg SubscriberConfig) *Subscriber {
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.NackDelay <= 0 {
		cfg.NackDelay = 100 * time.Millisecond
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = store.Logger()
	}
	return &Subscriber{store: store, cfg: cfg, closing: make(chan struct{})}
}

// Subscribe delivers the events of type topic on the returned channel,
// which is closed when ctx ends or the subscriber closes.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic == "" {
		return nil, ErrEmptyTopic
	}
	if s.cfg.ConsumerGroup != "" {
		if n := len(s.cfg.ConsumerGroup) + 1 + len(topic); n > raftlog.MaxKeyBytes {
			return nil, fmt.Errorf("%w: consumer group %q and topic %q make a group name of %d bytes, limit %d",
				ErrGroupNameTooLong, s.cfg.ConsumerGroup, topic, n, raftlog.MaxKeyBytes)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	out := make(chan *message.Message)
	s.wg.Add(2)
	go func() { // the subscription ends with ctx or with the subscriber
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.closing:
			cancel()
		}
	}()
	go func() {
		defer s.wg.Done()
		defer close(out)
		defer cancel()
		if s.cfg.ConsumerGroup == "" {
			s.readAll(ctx, topic, out)
			return
		}
		m := &member{s: s, topic: topic, group: s.cfg.ConsumerGroup + "/" + topic, out: out}
		m.run(ctx)
	}()
	return out, nil
}

// Close ends every subscription, closing their channels, and waits until
// they have stopped (committing what was acknowledged and leaving their
// groups).
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// readAll delivers every event of type topic from the start of the log.
func (s *Subscriber) readAll(ctx context.Context, topic string, out chan<- *message.Message) {
	sub, err := s.store.Subscribe(ctx, eventstore.SubscribeOptions{EventTypes: []string{topic}, BatchSize: s.cfg.BatchSize})
	if err != nil {
		s.logEnd(ctx, topic, err)
		return
	}
	defer sub.Close()
	for {
		evs, err := sub.Poll(ctx, s.cfg.BatchSize)
		if err != nil {
			s.logEnd(ctx, topic, err)
			return
		}
		for _, ev := range evs {
			if !s.deliver(ctx, ev, out) {
				return
			}
		}
	}
}

func (s *Subscriber) logEnd(ctx context.Context, topic string, err error) {
	if ctx.Err() == nil && !errors.Is(err, eventstore.ErrClosed) {
		s.cfg.Logger.Warn("esraftwatermill: subscription ended", "topic", topic, "err", err)
	}
}

// deliver sends ev until it is acked, again after each nack. It returns
// false if ctx ended first.
func (s *Subscriber) deliver(ctx context.Context, ev eventstore.Event, out chan<- *message.Message) bool {
	for {
		msg := Message(ev)
		mctx, cancel := context.WithCancel(ctx)
		msg.SetContext(mctx)
		select {
		case out <- msg:
		case <-ctx.Done():
			cancel()
			return false
		}
		select {
		case <-msg.Acked():
			cancel()
			return true
		case <-msg.Nacked():
			cancel()
		case <-ctx.Done():
			cancel()
			return false
		}
		if backoff.Sleep(ctx, s.cfg.NackDelay) != nil {
			return false
		}
	}
}
