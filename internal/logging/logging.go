// Package logging is esraft's one logging mechanism: every package takes
// a *slog.Logger in its Config or options (nil means Default), and
// hashicorp/raft's hclog output is adapted onto the same logger by Hclog.
// Nothing at WARN and above is discarded unless the caller's logger does
// so; there is no global logger to set.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// LevelTrace is the slog level of hclog's TRACE lines, below slog's DEBUG.
const LevelTrace = slog.LevelDebug - 4

// Formats of New.
const (
	FormatText = "text"
	FormatJSON = "json"
)

// defaultLogger is built once so that every nil logger shares one
// handler (one write per record on stderr).
var defaultLogger = sync.OnceValue(func() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
})

// Default returns the logger used where none is given: WARN and above,
// text format, to stderr.
func Default() *slog.Logger { return defaultLogger() }

// OrDefault returns l, or Default if l is nil.
func OrDefault(l *slog.Logger) *slog.Logger {
	if l == nil {
		return Default()
	}
	return l
}

// ParseLevel parses a level name: "trace", "debug", "info", "warn",
// "error" in any case, or slog's forms such as "INFO+2".
func ParseLevel(s string) (slog.Level, error) {
	if strings.EqualFold(strings.TrimSpace(s), "trace") {
		return LevelTrace, nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.TrimSpace(s))); err != nil {
		return 0, fmt.Errorf("logging: unknown level %q (trace, debug, info, warn, error)", s)
	}
	return l, nil
}

// New returns a logger writing records of level and above to w in format
// (FormatText or FormatJSON): what a command builds from its -log-level
// and -log-format flags. Empty means Default's: warn, text.
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	lvl := slog.LevelWarn
	if level != "" {
		var err error
		if lvl, err = ParseLevel(level); err != nil {
			return nil, err
		}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "", FormatText:
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case FormatJSON:
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("logging: unknown format %q (%s, %s)", format, FormatText, FormatJSON)
}
