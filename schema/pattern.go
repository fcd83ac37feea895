package schema

import (
	"regexp"
	"regexp/syntax"
)

// pattern is a compiled "pattern" keyword. The patterns most schemas use
// are one ASCII character class repeated over the whole string
// ("^[a-z0-9-]+$"); those are checked with a byte table, several times
// faster than the regexp engine. The table answers only for strings made
// of ASCII bytes; the regexp answers otherwise.
type pattern struct {
	re *regexp.Regexp
	// table is nil unless the pattern is ^[class]{min,max}$ with an ASCII
	// class; max < 0: no upper bound.
	table    *[128]bool
	min, max int
}

func compilePattern(s string) (*pattern, error) {
	re, err := regexp.Compile(s)
	if err != nil {
		return nil, err
	}
	p := &pattern{re: re}
	tree, err := syntax.Parse(s, syntax.Perl)
	if err != nil {
		return p, nil
	}
	if tree.Op != syntax.OpConcat || len(tree.Sub) != 3 ||
		tree.Sub[0].Op != syntax.OpBeginText || tree.Sub[2].Op != syntax.OpEndText {
		return p, nil
	}
	rep := tree.Sub[1]
	var min, max int
	switch rep.Op {
	case syntax.OpPlus:
		min, max = 1, -1
	case syntax.OpStar:
		min, max = 0, -1
	case syntax.OpRepeat:
		min, max = rep.Min, rep.Max
	default:
		return p, nil
	}
	if len(rep.Sub) != 1 || rep.Sub[0].Op != syntax.OpCharClass {
		return p, nil
	}
	var table [128]bool
	ranges := rep.Sub[0].Rune
	for i := 0; i+1 < len(ranges); i += 2 {
		lo, hi := ranges[i], ranges[i+1]
		if hi >= 128 {
			return p, nil
		}
		for r := lo; r <= hi; r++ {
			table[r] = true
		}
	}
	p.table, p.min, p.max = &table, min, max
	return p, nil
}

// match reports whether v matches.
func (p *pattern) match(v []byte) bool {
	if p.table != nil {
		ascii := true
		for _, c := range v {
			if c >= 128 {
				ascii = false
				break
			}
			if !p.table[c] {
				return false
			}
		}
		if ascii {
			return len(v) >= p.min && (p.max < 0 || len(v) <= p.max)
		}
	}
	return p.re.Match(v)
}
