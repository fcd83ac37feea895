package main

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// versionLine says which build this is, for -version: the module version
// ("(devel)" when built from a checkout), the commit and its time if the
// build recorded them, the Go version, and whether SQLite is the cgo
// driver or the pure-Go one.
func versionLine(info *debug.BuildInfo) string {
	if info == nil {
		return "orders: no build information (built without module support)"
	}
	set := map[string]string{}
	for _, s := range info.Settings {
		set[s.Key] = s.Value
	}
	var b strings.Builder
	fmt.Fprintf(&b, "orders %s", info.Main.Version)
	if rev := set["vcs.revision"]; rev != "" {
		fmt.Fprintf(&b, " commit %.12s", rev)
		if set["vcs.modified"] == "true" {
			b.WriteString("+modified")
		}
		if at := set["vcs.time"]; at != "" {
			fmt.Fprintf(&b, " (%s)", at)
		}
	}
	fmt.Fprintf(&b, ", %s", info.GoVersion)
	sqlite := "cgo (mattn/go-sqlite3)"
	if set["CGO_ENABLED"] != "1" || strings.Contains(set["-tags"], "esraft_puresqlite") {
		sqlite = "pure Go (modernc.org/sqlite)"
	}
	fmt.Fprintf(&b, ", SQLite %s", sqlite)
	return b.String()
}
