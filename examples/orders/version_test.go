package main

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestVersionLine(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.3.0"}, Settings: []debug.BuildSetting{
		{Key: "CGO_ENABLED", Value: "1"},
		{Key: "vcs.revision", Value: "27ec65b0123456789abcdef"},
		{Key: "vcs.time", Value: "2026-11-29T13:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	require.Equal(t, "orders v0.3.0 commit 27ec65b01234+modified (2026-11-29T13:00:00Z), go1.26.8, SQLite cgo (mattn/go-sqlite3)", versionLine(info))

	info.Settings = []debug.BuildSetting{{Key: "CGO_ENABLED", Value: "0"}}
	require.Equal(t, "orders v0.3.0, go1.26.8, SQLite pure Go (modernc.org/sqlite)", versionLine(info))
	info.Settings = []debug.BuildSetting{{Key: "CGO_ENABLED", Value: "1"}, {Key: "-tags", Value: "esraft_puresqlite"}}
	require.Contains(t, versionLine(info), "SQLite pure Go")

	require.Contains(t, versionLine(nil), "no build information")

	// -ldflags "-X main.version=...", as the Dockerfile sets it.
	version = "v0.4.0-rc1"
	defer func() { version = "" }()
	info.Settings = []debug.BuildSetting{{Key: "CGO_ENABLED", Value: "0"}}
	info.Main.Version = "(devel)"
	require.Equal(t, "orders v0.4.0-rc1, go1.26.8, SQLite pure Go (modernc.org/sqlite)", versionLine(info))
}
