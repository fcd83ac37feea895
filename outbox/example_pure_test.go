//go:build !cgo || esraft_puresqlite

package outbox_test

import _ "modernc.org/sqlite"

// sqliteDriver is the database/sql driver the example opens: any SQLite
// driver works; this is the one esraft links without cgo.
const sqliteDriver = "sqlite"
