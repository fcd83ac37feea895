package schema

import (
	"encoding/json"
	"unicode/utf8"
)

// validJSON reports whether data is certainly a JSON document valid under
// n, scanning the bytes once without building the document (false:
// invalid, or not sure). It accepts exactly the JSON grammar of RFC 8259;
// a string with escapes or non-ASCII bytes is decoded as encoding/json
// decodes it, so lengths, patterns and enums see what the library sees.
func (n *fastNode) validJSON(data []byte) bool {
	s := scanner{b: data}
	s.ws()
	if !s.value(n, 0) {
		return false
	}
	s.ws()
	return s.i == len(s.b)
}

type scanner struct {
	b []byte
	i int
}

// maxScanDepth is encoding/json's nesting limit: deeper documents are
// left to it (it refuses them).
const maxScanDepth = 10000

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value scans one value and checks it against n (nil: any value).
func (s *scanner) value(n *fastNode, depth int) bool {
	if depth > maxScanDepth {
		return false
	}
	start := s.i
	if !s.own(n, depth) {
		return false
	}
	if n == nil || (n.allOf == nil && n.anyOf == nil) {
		return true
	}
	end := s.i
	for _, a := range n.allOf {
		s.i = start
		if !s.value(a, depth+1) || s.i != end {
			return false
		}
	}
	if n.anyOf != nil {
		ok := false
		for _, a := range n.anyOf {
			s.i = start
			if s.value(a, depth+1) && s.i == end {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	s.i = end
	return true
}

// own scans one value and checks n's own keywords (not allOf, anyOf).
func (s *scanner) own(n *fastNode, depth int) bool {
	if s.i >= len(s.b) {
		return false
	}
	if n != nil && n.refuseAll {
		return false
	}
	var t jsonType
	switch c := s.b[s.i]; {
	case c == '{':
		t = tObject
	case c == '[':
		t = tArray
	case c == '"':
		t = tString
	case c == 't' || c == 'f':
		t = tBoolean
	case c == 'n':
		t = tNull
	case c == '-' || (c >= '0' && c <= '9'):
		t = tNumber
	default:
		return false
	}
	if n != nil && n.enum != nil && t != tString {
		return false // only string enums are compiled
	}
	if n != nil && n.types != 0 && t != tNumber && n.types&t == 0 {
		return false
	}
	switch t {
	case tObject:
		return s.object(n, depth)
	case tArray:
		return s.array(n, depth)
	case tString:
		return s.stringValue(n)
	case tBoolean:
		if s.lit("true") || s.lit("false") {
			return true
		}
		return false
	case tNull:
		return s.lit("null")
	}
	return s.number(n)
}

func (s *scanner) lit(word string) bool {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return false
}

func (s *scanner) object(n *fastNode, depth int) bool {
	s.i++ // {
	var seen uint64
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return n == nil || n.reqMask == 0
	}
	for {
		s.ws()
		key, ok := s.str()
		if !ok {
			return false
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		s.ws()
		var sub *fastNode
		if n != nil {
			k := n.key(key)
			if k != nil {
				seen |= k.bit
			}
			switch {
			case k != nil && k.declared:
				sub = k.node
			case n.closed:
				return false
			default:
				sub = n.additional
			}
		}
		if !s.value(sub, depth+1) {
			return false
		}
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return n == nil || seen == n.reqMask
		default:
			return false
		}
	}
}

func (s *scanner) array(n *fastNode, depth int) bool {
	s.i++ // [
	var items *fastNode
	if n != nil {
		items = n.items
	}
	count := 0
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
	} else {
		for {
			s.ws()
			if !s.value(items, depth+1) {
				return false
			}
			count++
			s.ws()
			if s.i >= len(s.b) {
				return false
			}
			if s.b[s.i] == ']' {
				s.i++
				break
			}
			if s.b[s.i] != ',' {
				return false
			}
			s.i++
		}
	}
	return n == nil || (count >= n.minItems && (n.maxItems < 0 || count <= n.maxItems))
}

// str scans a string and returns its content as encoding/json decodes it:
// the bytes themselves when plain ASCII without escapes (no copy).
func (s *scanner) str() ([]byte, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i
	s.i++
	plain := true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			if plain {
				return s.b[start+1 : s.i-1], true
			}
			var out string
			if json.Unmarshal(s.b[start:s.i], &out) != nil {
				return nil, false
			}
			return []byte(out), true
		case c == '\\':
			plain = false
			s.i += 2 // the escaped byte never ends the string; Unmarshal checks the escape
		case c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			plain = false
			s.i++
		default:
			s.i++
		}
	}
	return nil, false
}

func (s *scanner) stringValue(n *fastNode) bool {
	v, ok := s.str()
	if !ok {
		return false
	}
	if n == nil {
		return true
	}
	if n.minLength > 0 || n.maxLength >= 0 {
		l := utf8.RuneCount(v)
		if l < n.minLength || (n.maxLength >= 0 && l > n.maxLength) {
			return false
		}
	}
	if n.pattern != nil && !n.pattern.match(v) {
		return false
	}
	return n.enum == nil || n.enum[string(v)]
}

// number scans a number (RFC 8259 grammar) and checks the type and
// bounds; a number that is not a plain int64 passes only where no bound
// and no "integer" type apply.
func (s *scanner) number(n *fastNode) bool {
	start := s.i
	neg := false
	if s.b[s.i] == '-' {
		neg = true
		s.i++
	}
	if s.i >= len(s.b) {
		return false
	}
	var v int64
	exact := true
	switch c := s.b[s.i]; {
	case c == '0':
		s.i++
	case c >= '1' && c <= '9':
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			d := int64(s.b[s.i] - '0')
			if v > (1<<63-1-d)/10 {
				exact = false
			}
			v = v*10 + d
			s.i++
		}
	default:
		return false
	}
	integral := true
	if s.i < len(s.b) && s.b[s.i] == '.' {
		integral = false
		s.i++
		if !s.digits() {
			return false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		integral = false
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			return false
		}
	}
	if n == nil {
		return true
	}
	_ = start
	if n.types != 0 && n.types&tNumber == 0 && !(n.types&tInteger != 0 && integral) {
		return false
	}
	if n.minimum == nil && n.maximum == nil && n.exclMinimum == nil && n.exclMaximum == nil && n.multipleOf == 0 {
		return true
	}
	if !integral || !exact {
		return false
	}
	if neg {
		v = -v
	}
	return (n.minimum == nil || v >= *n.minimum) && (n.maximum == nil || v <= *n.maximum) &&
		(n.exclMinimum == nil || v > *n.exclMinimum) && (n.exclMaximum == nil || v < *n.exclMaximum) &&
		(n.multipleOf == 0 || v%n.multipleOf == 0)
}

func (s *scanner) digits() bool {
	from := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > from
}
