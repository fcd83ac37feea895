// Package clitest holds checks of the esraft CLI's output shared by its
// own tests and the end-to-end tests that run it against a cluster.
package clitest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// progressLine matches a rebuild progress line: percent, replayed, total.
var progressLine = regexp.MustCompile(`\] (\d+\.\d)% \((\d+)/(\d+)\)`)

// CheckRebuildProgress checks the lines `esraft projections rebuild
// --follow` printed: every line a progress line, the percentages never
// going down, at least one below 100 before the last, and the last the
// server's own final figure (last_rebuild): 100 % of the total, "done
// in". total, if not 0, is the number of events the rebuild must report.
func CheckRebuildProgress(t testing.TB, lines []string, total int) {
	t.Helper()
	require.GreaterOrEqual(t, len(lines), 2, lines)
	last, below := -1.0, false
	for i, l := range lines {
		m := progressLine.FindStringSubmatch(l)
		require.NotNil(t, m, "line %d: %q", i, l)
		pct, err := strconv.ParseFloat(m[1], 64)
		require.NoError(t, err)
		require.GreaterOrEqual(t, pct, last, "percent went down at line %d: %q", i, l)
		last = pct
		if i < len(lines)-1 && pct < 100 {
			below = true
		}
	}
	require.True(t, below, "no progress below 100%% before the end:\n%s", strings.Join(lines, "\n"))
	final := lines[len(lines)-1]
	m := progressLine.FindStringSubmatch(final)
	require.Equal(t, "100.0", m[1], final)
	require.Equal(t, m[2], m[3], final)
	if total != 0 {
		require.Equal(t, fmt.Sprint(total), m[3], final)
	}
	require.Contains(t, final, " done in ", final)
}
