//go:build cgo && !esraft_puresqlite

package sqlitex

import _ "github.com/mattn/go-sqlite3" // registers "sqlite3"

// builtinDriver is the database/sql driver this build links: with cgo,
// mattn/go-sqlite3 (SQLite's C source compiled in), the faster of the two in
// BENCHMARKS.md.
const builtinDriver = "sqlite3"
