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
