package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/esraft/esraft/internal/backoff"
	"github.com/esraft/esraft/internal/logging"
)

// Publisher delivers a message to the outside world. A nil error means the
// receiver has it; any error means it may or may not have it, and the
// relay publishes it again later with the same ID (so the receiver must
// deduplicate by Message.ID), unless the error is Permanent. Publish must
// return when ctx ends.
type Publisher interface {
	Publish(ctx context.Context, m Message) error
}

// PermanentError marks a publish failure that retrying cannot fix (a
// message the receiver rejects as invalid): the relay parks the message at
// once instead of retrying it.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err in a *PermanentError (nil stays nil).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// Config configures a Relay. Zero fields take the defaults in brackets.
type Config struct {
	// Publisher receives the messages; required.
	Publisher Publisher
	// MaxAttempts is how many failed publishes park a message [10].
	MaxAttempts int
	// InitialBackoff is the wait after a first failure; each further
	// failure doubles it, up to MaxBackoff [100ms, 1 minute].
	InitialBackoff, MaxBackoff time.Duration
	// Jitter takes up to this fraction off each wait, at random, so that
	// retries of many keys spread out (0 to 1; 0 means the default) [0.2].
	Jitter float64
	// BatchSize bounds the messages one round reads and records in one
	// transaction [100]. A crash loses the records of at most one round:
	// those messages are published again.
	BatchSize int
	// Concurrency is how many keys are published at once [4]; each key's
	// messages are published one at a time, in order.
	Concurrency int
	// PollInterval is how often an idle relay looks for messages that
	// other connections committed; Notify wakes it at once [1s].
	PollInterval time.Duration
	// PublishTimeout bounds one Publish [30s].
	PublishTimeout time.Duration
	// DoneRetention is how long the IDs of published messages are kept so
	// that reprocessing an event does not enqueue them again [7 days]. Set
	// it beyond the longest redelivery window, like dedup's retention.
	DoneRetention time.Duration
	// Now is the clock for backoffs and retention [time.Now].
	Now func() time.Time
	// Rand returns a number in [0, 1) for the jitter [math/rand/v2].
	Rand func() float64
	// OnError is told of a round that failed on the database (the relay
	// tries again after PollInterval) [ignore].
	OnError func(error)
	// Logger receives the relay's lines: failed publishes at WARN,
	// parked messages at ERROR, failed rounds at WARN [WARN and above to
	// stderr].
	Logger *slog.Logger
}

// Validate reports a missing publisher or a setting out of range.
func (c Config) Validate() error {
	switch {
	case c.Publisher == nil:
		return ErrNoPublisher
	case c.MaxAttempts < 0, c.BatchSize < 0, c.Concurrency < 0:
		return fmt.Errorf("%w: negative count (MaxAttempts %d, BatchSize %d, Concurrency %d)", ErrBadConfig, c.MaxAttempts, c.BatchSize, c.Concurrency)
	case c.InitialBackoff < 0, c.MaxBackoff < 0, c.PollInterval < 0, c.PublishTimeout < 0, c.DoneRetention < 0:
		return fmt.Errorf("%w: negative duration", ErrBadConfig)
	case c.MaxBackoff > 0 && c.InitialBackoff > c.MaxBackoff:
		return fmt.Errorf("%w: InitialBackoff %v above MaxBackoff %v", ErrBadConfig, c.InitialBackoff, c.MaxBackoff)
	case c.Jitter < 0 || c.Jitter > 1:
		return fmt.Errorf("%w: Jitter %v outside 0..1", ErrBadConfig, c.Jitter)
	}
	return nil
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 10
	}
	if c.BatchSize == 0 {
		c.BatchSize = 100
	}
	if c.Concurrency == 0 {
		c.Concurrency = 4
	}
	def(&c.InitialBackoff, 100*time.Millisecond)
	def(&c.MaxBackoff, max(time.Minute, c.InitialBackoff))
	def(&c.PollInterval, time.Second)
	def(&c.PublishTimeout, 30*time.Second)
	def(&c.DoneRetention, 7*24*time.Hour)
	if c.Jitter == 0 {
		c.Jitter = 0.2
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	c.Logger = logging.OrDefault(c.Logger)
}

// Backoff is the wait after the attempts-th failure of a message, before
// jitter.
func (c Config) backoff(attempts int) time.Duration {
	d := backoff.Policy{Initial: c.InitialBackoff, Max: c.MaxBackoff}.Delay(attempts)
	return d - time.Duration(float64(d)*c.Jitter*c.Rand())
}

// Relay publishes the outbox's messages. Start runs it in the background;
// DeliverDue runs one round by hand (tests, or your own loop). Rounds never
// overlap.
type Relay struct {
	db  *sql.DB
	cfg Config

	round     sync.Mutex // held for a whole round
	lastPrune time.Time  // guarded by round

	wake chan struct{}

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewRelay validates cfg and returns a relay over db (the database's
// writing pool, holding the outbox tables). It does no I/O.
func NewRelay(db *sql.DB, cfg Config) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Relay{db: db, cfg: cfg, wake: make(chan struct{}, 1)}, nil
}

// Start runs the relay in the background until ctx ends or Close. It
// returns ErrClosed after Close, and an error if already started.
func (r *Relay) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return ErrClosed
	case r.started:
		return errors.New("outbox: relay already started")
	}
	r.started = true
	ctx, r.cancel = context.WithCancel(ctx)
	r.done = make(chan struct{})
	go r.run(ctx)
	return nil
}

// Notify wakes the relay to look for new messages now; call it after
// committing a transaction that enqueued some.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Close stops the relay and waits for it: a publish in flight is
// cancelled, and what the round had published is recorded before it
// returns. It is idempotent; it does not close db.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closed = true
	cancel, done := r.cancel, r.done
	r.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}

func (r *Relay) run(ctx context.Context) {
	defer close(r.done)
	for {
		round, err := r.DeliverDue(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := r.cfg.PollInterval
		switch {
		case err != nil:
			r.cfg.Logger.Warn("outbox: relay round failed; trying again", "in", wait, "err", err)
			if r.cfg.OnError != nil {
				r.cfg.OnError(err)
			}
		case round.More || round.Published > 0:
			continue
		case !round.NextRetry.IsZero():
			wait = max(0, min(wait, round.NextRetry.Sub(r.cfg.Now())))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// Round reports what one DeliverDue did.
type Round struct {
	// Published, Failed and Parked count messages; Parked ones are also
	// counted in Failed.
	Published, Failed, Parked int
	// More is set when the round was full: more messages may be due.
	More bool
	// NextRetry is the earliest time a failed message is due again (zero if
	// none is waiting).
	NextRetry time.Time
}

type outcome struct {
	row       *row
	published bool
	err       error
}

// DeliverDue runs one round: it reads up to BatchSize messages whose keys
// are not held back by a failed message, publishes them (keys in
// parallel, each key in order, stopping at its first failure) and records
// the outcomes in one transaction. If ctx ends, publishing stops and what
// was published is still recorded.
func (r *Relay) DeliverDue(ctx context.Context) (Round, error) {
	r.round.Lock()
	defer r.round.Unlock()
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return Round{}, ErrClosed
	}
	now := r.cfg.Now()
	rows, err := r.due(ctx, now)
	if err != nil {
		return Round{}, err
	}
	var round Round
	round.More = len(rows) == r.cfg.BatchSize

	// Group by key in seq order; rows arrive in seq order.
	var keys [][]*row
	index := map[string]int{}
	for i := range rows {
		k, ok := index[rows[i].key]
		if !ok {
			k = len(keys)
			index[rows[i].key] = k
			keys = append(keys, nil)
		}
		keys[k] = append(keys[k], &rows[i])
	}
	results := make([][]outcome, len(keys))
	sem := make(chan struct{}, r.cfg.Concurrency)
	var wg sync.WaitGroup
	for k := range keys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[k] = r.publishKey(ctx, keys[k])
		}()
	}
	wg.Wait()

	if err := r.record(context.WithoutCancel(ctx), now, results, &round); err != nil {
		return round, err
	}
	if now.Sub(r.lastPrune) >= time.Minute {
		if _, err := PruneDone(ctx, r.db, now.Add(-r.cfg.DoneRetention)); err != nil {
			return round, err
		}
		r.lastPrune = now
	}
	var next sql.NullInt64
	if err := r.db.QueryRowContext(ctx,
		`SELECT min(next_at) FROM esraft_outbox WHERE attempts > 0 AND parked_at IS NULL`).Scan(&next); err != nil {
		return round, dbErr("next retry", err)
	}
	if next.Valid {
		round.NextRetry = time.UnixMilli(next.Int64)
	}
	return round, nil
}

// due reads the next messages of every key that no failed message holds
// back. Only a key's first message is ever tried, so the keys held back
// are those with a failed message (attempts > 0) parked or not yet due.
func (r *Relay) due(ctx context.Context, now time.Time) ([]row, error) {
	q, err := r.db.QueryContext(ctx,
		`SELECT seq, id, key, type, payload, headers, source, handler, created_at, attempts
		 FROM esraft_outbox
		 WHERE key NOT IN (
			SELECT key FROM esraft_outbox WHERE attempts > 0 AND (parked_at IS NOT NULL OR next_at > ?))
		 ORDER BY seq LIMIT ?`, now.UnixMilli(), r.cfg.BatchSize)
	if err != nil {
		return nil, dbErr("read due", err)
	}
	defer q.Close()
	var rows []row
	for q.Next() {
		var x row
		if err := q.Scan(&x.seq, &x.id, &x.key, &x.typ, &x.payload, &x.headers, &x.source, &x.handler, &x.created, &x.attempts); err != nil {
			return nil, dbErr("read due", err)
		}
		rows = append(rows, x)
	}
	if err := q.Err(); err != nil {
		return nil, dbErr("read due", err)
	}
	return rows, nil
}

// publishKey publishes one key's messages in order until one fails. A
// publish cut short by ctx is not an attempt and is not recorded.
func (r *Relay) publishKey(ctx context.Context, rows []*row) []outcome {
	out := make([]outcome, 0, len(rows))
	for _, x := range rows {
		if ctx.Err() != nil {
			break
		}
		m, err := x.message()
		if err != nil {
			out = append(out, outcome{row: x, err: Permanent(err)})
			break
		}
		pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		err = r.cfg.Publisher.Publish(pctx, m)
		cancel()
		if err != nil && ctx.Err() != nil {
			break
		}
		out = append(out, outcome{row: x, published: err == nil, err: err})
		if err != nil {
			break
		}
	}
	return out
}

func (r *Relay) record(ctx context.Context, now time.Time, results [][]outcome, round *Round) error {
	n := 0
	for _, rs := range results {
		n += len(rs)
	}
	if n == 0 {
		return nil
	}
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return dbErr("record", err)
	}
	defer tx.Rollback()
	var failed []failure
	for _, rs := range results {
		for _, o := range rs {
			if o.published {
				round.Published++
				if _, err := tx.ExecContext(ctx,
					`INSERT INTO esraft_outbox_done (id, done_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`,
					o.row.id, now.UnixMilli()); err != nil {
					return dbErr("record", err)
				}
				if _, err := tx.ExecContext(ctx, `DELETE FROM esraft_outbox WHERE seq = ?`, o.row.seq); err != nil {
					return dbErr("record", err)
				}
				continue
			}
			round.Failed++
			attempts := o.row.attempts + 1
			var parked sql.NullInt64
			var perm *PermanentError
			if attempts >= r.cfg.MaxAttempts || errors.As(o.err, &perm) {
				parked = sql.NullInt64{Int64: now.UnixMilli(), Valid: true}
				round.Parked++
			}
			next := now.Add(r.cfg.backoff(attempts)).UnixMilli()
			if _, err := tx.ExecContext(ctx,
				`UPDATE esraft_outbox SET attempts = ?, next_at = ?, parked_at = ?, last_error = ? WHERE seq = ?`,
				attempts, next, parked, o.err.Error(), o.row.seq); err != nil {
				return dbErr("record", err)
			}
			failed = append(failed, failure{o.row, o.err, attempts, parked.Valid, time.UnixMilli(next)})
		}
	}
	if err := tx.Commit(); err != nil {
		return dbErr("record", err)
	}
	for _, f := range failed {
		f.log(r.cfg.Logger)
	}
	return nil
}

// failure is a failed publish as recorded.
type failure struct {
	row      *row
	err      error
	attempts int
	parked   bool
	next     time.Time
}

func (f failure) log(l *slog.Logger) {
	args := []any{"id", f.row.id, "key", f.row.key, "type", f.row.typ, "handler", f.row.handler, "attempts", f.attempts, "err", f.err}
	if f.parked {
		l.Error("outbox: message parked; it waits for Retry or Discard, and holds back its key", args...)
		return
	}
	l.Warn("outbox: publish failed; will retry", append(args, "next", f.next)...)
}
