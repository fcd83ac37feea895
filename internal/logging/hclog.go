package logging

import (
	"bytes"
	"context"
	"encoding"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// NameKey is the attribute that carries an hclog logger's name (as set
// by Named and ResetNamed, dot-separated).
const NameKey = "logger"

// Hclog returns an hclog.Logger, as hashicorp/raft and raft-wal take,
// that writes to l: hclog's levels map onto slog's (TRACE onto
// LevelTrace), the logger's name is the NameKey attribute, and With's
// and each call's key/value pairs become attributes. What is emitted is
// l's handler's choice: the Is* guards and GetLevel ask it, and SetLevel
// does nothing. A nil l means Default.
func Hclog(l *slog.Logger, name string) hclog.Logger {
	return newHclogAdapter(OrDefault(l), name, nil)
}

type hclogAdapter struct {
	base    *slog.Logger // without name or implied args
	name    string
	implied []any
	out     *slog.Logger // base with the name and implied args
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHclogAdapter(base *slog.Logger, name string, implied []any) *hclogAdapter {
	out := base
	if name != "" {
		out = out.With(NameKey, name)
	}
	if len(implied) > 0 {
		out = out.With(convertArgs(implied)...)
	}
	return &hclogAdapter{base: base, name: name, implied: implied, out: out}
}

// slogLevel maps an hclog level; ok is false for Off.
func slogLevel(l hclog.Level) (slog.Level, bool) {
	switch l {
	case hclog.Trace:
		return LevelTrace, true
	case hclog.Debug:
		return slog.LevelDebug, true
	case hclog.Warn:
		return slog.LevelWarn, true
	case hclog.Error:
		return slog.LevelError, true
	case hclog.Off:
		return 0, false
	}
	return slog.LevelInfo, true // Info, NoLevel (hclog's default)
}

// convertArgs turns hclog's special values into plain ones, and values
// that only a String method describes into that string (JSON would
// encode a *raft.Raft as {}); the rest is slog's key/value convention
// already. A key that names one of slog's own fields (raft logs a
// duration as "time") gets a trailing underscore, so that a handler's
// time, level or message is never shadowed or misread.
func convertArgs(args []any) []any {
	var out []any
	set := func(i int, v any) {
		if out == nil {
			out = append([]any(nil), args...)
		}
		out[i] = v
	}
	for i, a := range args {
		if i%2 == 0 {
			if k, ok := a.(string); ok && reservedKey(k) {
				set(i, k+"_")
			}
			continue
		}
		if v, ok := convertValue(a); ok {
			set(i, v)
		}
	}
	if out == nil {
		return args
	}
	return out
}

func reservedKey(k string) bool {
	return k == slog.TimeKey || k == slog.LevelKey || k == slog.MessageKey || k == slog.SourceKey
}

func convertValue(v any) (any, bool) {
	switch v := v.(type) {
	case hclog.Format:
		return formatValue(v), true
	case error, json.Marshaler, encoding.TextMarshaler, slog.LogValuer, time.Duration:
		return nil, false // slog's handlers render these well
	case fmt.Stringer:
		return fmt.Sprint(v), true // fmt survives a nil receiver
	}
	return nil, false
}

func formatValue(f hclog.Format) string {
	if len(f) == 0 {
		return ""
	}
	format, ok := f[0].(string)
	if !ok {
		return fmt.Sprint(f...)
	}
	return fmt.Sprintf(format, f[1:]...)
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	lvl, ok := slogLevel(level)
	if !ok {
		return
	}
	ctx := context.Background()
	if !a.out.Enabled(ctx, lvl) {
		return
	}
	a.out.Log(ctx, lvl, msg, convertArgs(args)...)
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) enabled(l slog.Level) bool { return a.out.Enabled(context.Background(), l) }

func (a *hclogAdapter) IsTrace() bool { return a.enabled(LevelTrace) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(slog.LevelDebug) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(slog.LevelInfo) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(slog.LevelWarn) }
func (a *hclogAdapter) IsError() bool { return a.enabled(slog.LevelError) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.implied }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	implied := append(append([]any(nil), a.implied...), args...)
	return newHclogAdapter(a.base, a.name, implied)
}

func (a *hclogAdapter) Name() string { return a.name }

func (a *hclogAdapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return newHclogAdapter(a.base, name, a.implied)
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return newHclogAdapter(a.base, name, a.implied)
}

// SetLevel does nothing: the slog handler decides what is emitted.
func (a *hclogAdapter) SetLevel(hclog.Level) {}

// GetLevel returns the lowest level the slog handler emits.
func (a *hclogAdapter) GetLevel() hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if sl, _ := slogLevel(l); a.enabled(sl) {
			return l
		}
	}
	return hclog.Off
}

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &stdWriter{a: a, opts: *opts}
}

// stdWriter logs each Write (a line of a *log.Logger) as one record,
// with the level given by StandardLoggerOptions.
type stdWriter struct {
	a    *hclogAdapter
	opts hclog.StandardLoggerOptions
}

func (w *stdWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, " \t\n"))
	level := hclog.Info
	switch {
	case w.opts.ForceLevel != hclog.NoLevel:
		_, line = levelPrefix(line)
		level = w.opts.ForceLevel
	case w.opts.InferLevels:
		if w.opts.InferLevelsWithTimestamp {
			line = strings.TrimLeft(line, "0123456789 :/.+-TZ")
		}
		level, line = levelPrefix(line)
	}
	w.a.Log(level, line)
	return len(p), nil
}

// levelPrefix strips a leading "[ERROR]" style level from line; without
// one the level is Info.
func levelPrefix(line string) (hclog.Level, string) {
	for _, p := range []struct {
		prefix string
		level  hclog.Level
	}{
		{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
		{"[WARN]", hclog.Warn}, {"[ERROR]", hclog.Error}, {"[ERR]", hclog.Error},
	} {
		if rest, ok := strings.CutPrefix(line, p.prefix); ok {
			return p.level, strings.TrimSpace(rest)
		}
	}
	return hclog.Info, line
}
