package dedup

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Retention says which marks to keep; see the package doc for sizing it.
// A zero field sets no limit of that kind; at least one must be set.
type Retention struct {
	// MaxAge drops marks older than this.
	MaxAge time.Duration
	// MaxPerConsumer keeps at most this many of each consumer's newest
	// marks.
	MaxPerConsumer int
}

// Validate reports a negative limit, or no limit at all.
func (r Retention) Validate() error {
	switch {
	case r.MaxAge < 0 || r.MaxPerConsumer < 0:
		return fmt.Errorf("%w: negative limit (MaxAge %v, MaxPerConsumer %d)", ErrBadRetention, r.MaxAge, r.MaxPerConsumer)
	case r.MaxAge == 0 && r.MaxPerConsumer == 0:
		return fmt.Errorf("%w: neither MaxAge nor MaxPerConsumer is set", ErrBadRetention)
	}
	return nil
}

// pruneBatch bounds the rows one pruning transaction deletes, so that the
// handlers sharing the single writer wait for at most one short batch.
const pruneBatch = 1000

// Prune deletes the marks r does not keep, as of now, in transactions of
// at most 1,000 rows each, on db (the database's writing pool). It returns
// how many marks it deleted. Finding the count limit's boundary walks that
// many index entries per consumer, so run it every minute or so, not per
// message.
func Prune(ctx context.Context, db *sql.DB, r Retention, now time.Time) (int64, error) {
	if err := r.Validate(); err != nil {
		return 0, err
	}
	var total int64
	consumer := ""
	for {
		err := db.QueryRowContext(ctx,
			`SELECT consumer FROM esraft_dedup WHERE consumer > ? ORDER BY consumer LIMIT 1`, consumer).Scan(&consumer)
		if errors.Is(err, sql.ErrNoRows) {
			return total, nil
		}
		if err != nil {
			return total, dbErr("prune", err)
		}
		n, err := pruneConsumer(ctx, db, consumer, r, now)
		total += n
		if err != nil {
			return total, err
		}
	}
}

func pruneConsumer(ctx context.Context, db *sql.DB, consumer string, r Retention, now time.Time) (int64, error) {
	// Marks strictly before (cutAt, cutSeq) in (seen_at, seq) order go.
	cutAt, cutSeq := int64(-1<<63), int64(-1<<63)
	if r.MaxAge > 0 {
		cutAt = now.Add(-r.MaxAge).UnixMilli()
		cutSeq = -1 << 63
	}
	if r.MaxPerConsumer > 0 {
		var at, seq int64
		err := db.QueryRowContext(ctx,
			`SELECT seen_at, seq FROM esraft_dedup WHERE consumer = ?
			 ORDER BY seen_at DESC, seq DESC LIMIT 1 OFFSET ?`, consumer, r.MaxPerConsumer-1).Scan(&at, &seq)
		switch {
		case errors.Is(err, sql.ErrNoRows): // fewer marks than the limit
		case err != nil:
			return 0, dbErr("prune", err)
		case at > cutAt || (at == cutAt && seq > cutSeq):
			cutAt, cutSeq = at, seq
		}
	}
	if cutAt == -1<<63 {
		return 0, nil
	}
	var total int64
	for {
		res, err := db.ExecContext(ctx,
			`DELETE FROM esraft_dedup WHERE seq IN (
				SELECT seq FROM esraft_dedup
				WHERE consumer = ? AND (seen_at < ? OR (seen_at = ? AND seq < ?))
				LIMIT ?)`, consumer, cutAt, cutAt, cutSeq, pruneBatch)
		if err != nil {
			return total, dbErr("prune", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, dbErr("prune", err)
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}

// PrunerConfig configures a Pruner.
type PrunerConfig struct {
	Retention Retention
	// Interval between prunes (default 1 minute). Between two prunes the
	// table grows by what arrives in one interval beyond the retention.
	Interval time.Duration
	// Now is the clock (default time.Now); use the one given to Wrap.
	Now func() time.Time
	// OnError is told of a failed prune (default: ignore; the next one
	// retries).
	OnError func(error)
}

// Validate checks the retention and the interval.
func (c PrunerConfig) Validate() error {
	if c.Interval < 0 {
		return fmt.Errorf("%w: negative interval %v", ErrBadRetention, c.Interval)
	}
	return c.Retention.Validate()
}

// Pruner prunes the table in the background, once at start and then
// every Interval, until Close.
type Pruner struct {
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// StartPruner validates cfg and starts a Pruner on db (the writing pool).
func StartPruner(db *sql.DB, cfg PrunerConfig) (*Pruner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pruner{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(cfg.Interval)
		defer t.Stop()
		for {
			if _, err := Prune(ctx, db, cfg.Retention, cfg.Now()); err != nil && ctx.Err() == nil && cfg.OnError != nil {
				cfg.OnError(err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return p, nil
}

// Close stops the pruner and waits for it; it is idempotent.
func (p *Pruner) Close() error {
	p.once.Do(p.cancel)
	<-p.done
	return nil
}
