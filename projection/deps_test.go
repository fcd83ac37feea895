package projection

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Importing projection links no SQLite driver (cgo): a group member
// without a database does not carry it. Package projection/sqlite does.
func TestProjectionLinksNoSQLiteDriver(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		require.NoError(t, err, "go list -deps %s", pkg)
		return strings.Fields(string(out))
	}
	const driver = "github.com/mattn/go-sqlite3"
	require.NotContains(t, deps("github.com/esraft/esraft/projection"), driver)
	require.Contains(t, deps("github.com/esraft/esraft/projection/sqlite"), driver, "the check sees the driver where it is linked")
}
