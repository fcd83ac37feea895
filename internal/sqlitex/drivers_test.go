//go:build cgo && !esraft_puresqlite

package sqlitex

import (
	"testing"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite" // the pure-Go driver too, so both are tested in one run
)

// TestBothDrivers runs the opening test on the pure-Go driver as well: a
// cgo build links mattn/go-sqlite3 only, but a CGO_ENABLED=0 build gets
// modernc.org/sqlite with the same connection string.
func TestBothDrivers(t *testing.T) {
	for _, name := range []string{"sqlite3", "sqlite"} {
		t.Run(name, func(t *testing.T) {
			restore, err := UseDriver(name)
			require.NoError(t, err)
			defer restore()
			TestOpenMigratesOnceAndIsWAL(t)
		})
	}
	_, err := UseDriver("nosuch")
	require.ErrorContains(t, err, `no database/sql driver "nosuch"`)
}
