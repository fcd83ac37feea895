package projection

import (
	"context"
	"errors"
	"log/slog"

	"github.com/esraft/esraft/eventstore"
)

// runnerLogger returns l, or the store's logger if l is nil, with the
// attributes that name the runner.
func runnerLogger(l *slog.Logger, store *eventstore.Store, args ...any) *slog.Logger {
	if l == nil {
		l = store.Logger()
	}
	return l.With(args...)
}

// logRebuild reports how a rebuild ended: RebuildDone is the only other
// place its error shows.
func logRebuild(l *slog.Logger, err error) {
	switch {
	case err == nil:
		l.Info("projection: rebuild done; the new read model is live")
	case errors.Is(err, context.Canceled):
		l.Info("projection: rebuild abandoned", "err", err)
	default:
		l.Error("projection: rebuild failed; the old read model stays live", "err", err)
	}
}

// logWaiting reports the events parked behind an earlier parked event of
// their stream: one line per stream, with a count.
func logWaiting(l *slog.Logger, parks []parking) {
	if len(parks) == 0 {
		return
	}
	type key struct {
		part   eventstore.Partition
		stream string
	}
	n := map[key]int{}
	var order []key
	for _, pe := range parks {
		k := key{pe.Partition, pe.Stream}
		if n[k] == 0 {
			order = append(order, k)
		}
		n[k]++
	}
	for _, k := range order {
		l.Warn("projection: events parked behind an earlier parked event of their stream",
			"partition", k.part, "stream", k.stream, "events", n[k])
	}
}
