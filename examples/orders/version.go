package main

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// version is the release this binary was built as, set at link time
// (-ldflags "-X main.version=v0.3.0", as the Dockerfile at the repository
// root does with its VERSION argument). Empty, -version shows the module
// version of the build information: "(devel)" for a build from a checkout,
// whose commit Go records only when the build sees .git, which a Docker
// build context leaves out.
var version string

// versionLine says which build this is, for -version: the module version
// ("(devel)" when built from a checkout), the commit and its time if the
// build recorded them (the link-time version, if set, in place of the
// module version), the Go version, and whether SQLite is the cgo
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
	v := info.Main.Version
	if version != "" {
		v = version
	}
	fmt.Fprintf(&b, "orders %s", v)
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
