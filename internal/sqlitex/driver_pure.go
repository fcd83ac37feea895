//go:build !cgo || esraft_puresqlite

package sqlitex

import _ "modernc.org/sqlite" // registers "sqlite"

// builtinDriver is the database/sql driver this build links: without cgo
// (CGO_ENABLED=0, or the esraft_puresqlite build tag), modernc.org/sqlite,
// SQLite translated to Go, so static binaries and cross-compiles work.
const builtinDriver = "sqlite"
