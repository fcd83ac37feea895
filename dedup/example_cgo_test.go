//go:build cgo && !esraft_puresqlite

package dedup_test

import _ "github.com/mattn/go-sqlite3"

// sqliteDriver is the database/sql driver the example opens: any SQLite
// driver works; this is the one esraft links with cgo.
const sqliteDriver = "sqlite3"
