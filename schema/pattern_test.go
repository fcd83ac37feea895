package schema

import (
	"regexp"
	"testing"
)

// TestPatternTableAgreesWithRegexp: the byte table gives the regexp's
// answer for every string tried, and is used for the common shapes.
func TestPatternTableAgreesWithRegexp(t *testing.T) {
	inputs := []string{"", "a", "abc-9", "ABC", "a b", "a\n", "\na", "ü", "aü", "-", "aaaaaaaaaaaa", "a_b", "x.y", "\x00"}
	for _, tc := range []struct {
		pat   string
		table bool
	}{
		{`^[a-z0-9-]+$`, true}, {`^[a-z]*$`, true}, {`^[A-Za-z_]{2,5}$`, true}, {`^\d{3}$`, true}, {`^[^a]+$`, false},
		{`^[a-z]+`, false}, {`[a-z]+$`, false}, {`^(ab)+$`, false}, {`^.+$`, false}, {`^[a-zü]+$`, false},
	} {
		p, err := compilePattern(tc.pat)
		if err != nil {
			t.Fatal(err)
		}
		if (p.table != nil) != tc.table {
			t.Errorf("%s: table %v, want %v", tc.pat, p.table != nil, tc.table)
		}
		re := regexp.MustCompile(tc.pat)
		for _, in := range inputs {
			if got, want := p.match([]byte(in)), re.MatchString(in); got != want {
				t.Errorf("%s on %q: %v, the regexp says %v", tc.pat, in, got, want)
			}
		}
	}
}
