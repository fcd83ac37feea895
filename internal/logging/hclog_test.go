package logging

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
)

// records decodes the JSON lines written to buf.
func records(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(buf)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "line %q", sc.Text())
		out = append(out, m)
	}
	require.NoError(t, sc.Err())
	return out
}

func jsonLogger(buf *bytes.Buffer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: level}))
}

func TestHclogLevels(t *testing.T) {
	var buf bytes.Buffer
	h := Hclog(jsonLogger(&buf, LevelTrace), "")
	h.Trace("t")
	h.Debug("d")
	h.Info("i")
	h.Warn("w")
	h.Error("e")
	h.Log(hclog.NoLevel, "n")
	h.Log(hclog.Off, "off")
	recs := records(t, &buf)
	var got [][2]string
	for _, r := range recs {
		got = append(got, [2]string{r["level"].(string), r["msg"].(string)})
	}
	require.Equal(t, [][2]string{
		{"DEBUG-4", "t"}, {"DEBUG", "d"}, {"INFO", "i"}, {"WARN", "w"}, {"ERROR", "e"}, {"INFO", "n"},
	}, got)
	require.True(t, h.IsTrace())
	require.Equal(t, hclog.Trace, h.GetLevel())
}

func TestHclogDropsBelowHandlerLevel(t *testing.T) {
	var buf bytes.Buffer
	h := Hclog(jsonLogger(&buf, slog.LevelWarn), "raftlog")
	h.Trace("t")
	h.Debug("d")
	h.Info("i")
	h.Warn("w", "k", 1)
	h.Error("e")
	h.SetLevel(hclog.Trace) // the handler decides, not the adapter
	h.Debug("d2")
	recs := records(t, &buf)
	require.Len(t, recs, 2)
	require.Equal(t, "w", recs[0]["msg"])
	require.Equal(t, "e", recs[1]["msg"])
	require.False(t, h.IsTrace())
	require.False(t, h.IsDebug())
	require.False(t, h.IsInfo())
	require.True(t, h.IsWarn())
	require.True(t, h.IsError())
	require.Equal(t, hclog.Warn, h.GetLevel())

	off := Hclog(slog.New(slog.DiscardHandler), "")
	require.Equal(t, hclog.Off, off.GetLevel())
}

func TestHclogNamesAndArgs(t *testing.T) {
	var buf bytes.Buffer
	root := Hclog(jsonLogger(&buf, slog.LevelDebug).With("node", "n1"), "raftlog")
	require.Equal(t, "raftlog", root.Name())
	wal := root.Named("wal").With("group", 2)
	require.Equal(t, "raftlog.wal", wal.Name())
	require.Equal(t, []any{"group", 2}, wal.ImpliedArgs())
	wal.Info("segment sealed", "segment", 7, "error", errors.New("boom"), "took", hclog.Fmt("%dms", 12))
	reset := wal.ResetNamed("raft")
	require.Equal(t, "raft", reset.Name())
	reset.Warn("heartbeat failed")
	root.Named("snapshot").Debug("saved")

	recs := records(t, &buf)
	require.Len(t, recs, 3)
	r := recs[0]
	require.Equal(t, "segment sealed", r["msg"])
	require.Equal(t, "n1", r["node"])
	require.Equal(t, "raftlog.wal", r[NameKey])
	require.EqualValues(t, 2, r["group"])
	require.EqualValues(t, 7, r["segment"])
	require.Equal(t, "boom", r["error"])
	require.Equal(t, "12ms", r["took"])

	require.Equal(t, "raft", recs[1][NameKey])
	require.EqualValues(t, 2, recs[1]["group"], "ResetNamed keeps the implied args")
	require.Equal(t, "n1", recs[1]["node"])

	require.Equal(t, "raftlog.snapshot", recs[2][NameKey])
	require.NotContains(t, recs[2], "group", "With on a child does not reach its parent")
}

// node stands for *raft.Raft: a String method and no exported fields.
type node struct{ id string }

func (n *node) String() string { return "Node at " + n.id }

func TestHclogStringers(t *testing.T) {
	var buf bytes.Buffer
	h := Hclog(jsonLogger(&buf, slog.LevelInfo), "")
	var none *node
	h.Info("state", "leader", &node{"n1"}, "none", none, "wait", 1500*time.Millisecond, "err", errors.New("boom"))
	recs := records(t, &buf)
	require.Len(t, recs, 1)
	require.Equal(t, "Node at n1", recs[0]["leader"])
	require.Equal(t, "<nil>", recs[0]["none"])
	require.EqualValues(t, 1500*time.Millisecond, recs[0]["wait"], "a duration stays a duration")
	require.Equal(t, "boom", recs[0]["err"])
}

func TestHclogStandardLogger(t *testing.T) {
	var buf bytes.Buffer
	h := Hclog(jsonLogger(&buf, slog.LevelDebug), "std")
	h.StandardLogger(nil).Print("[ERROR] plain")
	h.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[ERR] inferred")
	h.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true, InferLevelsWithTimestamp: true}).
		Print("2026/11/29 10:00:00 [DEBUG] stamped")
	h.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}).Print("[DEBUG] forced")
	w := h.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true})
	_, err := w.Write([]byte("[WARN] written\n"))
	require.NoError(t, err)

	recs := records(t, &buf)
	var got [][2]string
	for _, r := range recs {
		require.Equal(t, "std", r[NameKey])
		got = append(got, [2]string{r["level"].(string), r["msg"].(string)})
	}
	require.Equal(t, [][2]string{
		{"INFO", "[ERROR] plain"}, {"ERROR", "inferred"}, {"DEBUG", "stamped"}, {"WARN", "forced"}, {"WARN", "written"},
	}, got)
}

func TestHclogNilIsDefault(t *testing.T) {
	h := Hclog(nil, "x")
	require.False(t, h.IsInfo())
	require.True(t, h.IsWarn())
	require.Same(t, Default(), OrDefault(nil))
}

func TestNewAndParseLevel(t *testing.T) {
	for s, want := range map[string]slog.Level{
		"trace": LevelTrace, "DEBUG": slog.LevelDebug, "info": slog.LevelInfo, "Warn": slog.LevelWarn,
		"error": slog.LevelError, "info+2": slog.LevelInfo + 2,
	} {
		got, err := ParseLevel(s)
		require.NoError(t, err, s)
		require.Equal(t, want, got, s)
	}
	_, err := ParseLevel("loud")
	require.Error(t, err)

	var buf bytes.Buffer
	l, err := New(&buf, "info", "json")
	require.NoError(t, err)
	l.Debug("hidden")
	l.Info("shown", "k", "v")
	recs := records(t, &buf)
	require.Len(t, recs, 1)
	require.Equal(t, "v", recs[0]["k"])

	buf.Reset()
	l, err = New(&buf, "", "")
	require.NoError(t, err)
	l.Info("hidden")
	l.Warn("shown")
	require.Equal(t, 1, bytes.Count(buf.Bytes(), []byte("\n")))
	require.Contains(t, buf.String(), "level=WARN msg=shown")

	_, err = New(&buf, "info", "xml")
	require.Error(t, err)
	_, err = New(&buf, "loud", "text")
	require.Error(t, err)
}

// raft logs durations under "time"; such keys must not shadow the
// record's own time (a handler's ReplaceAttr that reads "time" as a
// time.Time would panic on them).
func TestHclogReservedKeys(t *testing.T) {
	var buf bytes.Buffer
	var seen []slog.Kind
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			seen = append(seen, a.Value.Kind())
		}
		return a
	}}))
	Hclog(l, "").Warn("failed to contact", "server-id", "n3", "time", 201*time.Millisecond, "msg", "x", "level", 1)
	recs := records(t, &buf)
	require.Len(t, recs, 1)
	require.Equal(t, []slog.Kind{slog.KindTime}, seen, "only the record's time is named time")
	require.EqualValues(t, 201*time.Millisecond, recs[0]["time_"])
	require.Equal(t, "failed to contact", recs[0]["msg"])
	require.Equal(t, "x", recs[0]["msg_"])
	require.EqualValues(t, 1, recs[0]["level_"])
}
