package eventstore_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/esraft/esraft/systemtest/syncbuf"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/raftlog"
	"github.com/esraft/esraft/systemtest/wait"
)

func TestLoggerReachesRaft(t *testing.T) {
	var out syncbuf.Buffer
	l := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	st, err := eventstore.Open(context.Background(), t.TempDir(), eventstore.Logger(l))
	require.NoError(t, err)
	defer st.Close()
	require.Same(t, l, st.Logger())
	// The embedded node elected itself before Open returned; raft may
	// log it a moment later.
	var leader string
	wait.Until(t, 10*time.Second, "raft's INFO lines in the store's logger", func() bool {
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, "entering leader state") {
				leader = line
			}
		}
		return leader != ""
	})
	require.Contains(t, leader, "logger=raftlog")
	require.Contains(t, leader, "node=node1")
}

func TestLoggerThroughLogConfig(t *testing.T) {
	l := slog.New(slog.DiscardHandler)
	st, err := eventstore.Open(context.Background(), t.TempDir(),
		eventstore.LogConfig(func(c *raftlog.Config) { c.Logger = l }))
	require.NoError(t, err)
	defer st.Close()
	require.Same(t, l, st.Logger())
}

func TestLoggerDefault(t *testing.T) {
	st, err := eventstore.Open(context.Background(), t.TempDir())
	require.NoError(t, err)
	defer st.Close()
	require.NotNil(t, st.Logger())
	require.True(t, st.Logger().Enabled(context.Background(), slog.LevelWarn))
	require.False(t, st.Logger().Enabled(context.Background(), slog.LevelInfo))
}
