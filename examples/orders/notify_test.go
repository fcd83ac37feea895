package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The notifications file is readable by its owner only, when created and
// when an earlier version left it readable to others.
func TestNotificationsFileMode(t *testing.T) {
	for _, c := range []struct {
		name     string
		existing bool
	}{{"created", false}, {"left 0644 by an earlier version", true}} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			file := filepath.Join(dir, "notifications.jsonl")
			if c.existing {
				require.NoError(t, os.MkdirAll(dir, 0o700))
				require.NoError(t, os.WriteFile(file, nil, 0o644))
				require.NoError(t, os.Chmod(file, 0o644)) // whatever the umask
			}
			_, _, _, stop := startAppWith(t, config{data: dir})
			defer stop()
			fi, err := os.Stat(file)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		})
	}
}
