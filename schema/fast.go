package schema

import (
	"encoding/json"
	"math/big"
	"math/bits"
	"strconv"
)

// The fast path: the validator of the JSON Schema library is general and
// allocates much (it turns every number into a big.Rat through fmt), which
// on this machine cost as much CPU as the rest of an append. Schemas made
// only of the common keywords are also compiled here into a plain tree
// that decides "valid" cheaply. It is sound by construction: it answers
// "valid" only when every keyword it checks holds and it knows them all;
// any other answer ("not sure") sends the document to the library, which
// gives the verdict and, for an invalid document, the path and reason.
// FuzzFastPathAgreesWithLibrary checks the soundness.

type jsonType uint8

const (
	tNull jsonType = 1 << iota
	tBoolean
	tObject
	tArray
	tNumber
	tInteger
	tString
)

var typeBits = map[string]jsonType{
	"null": tNull, "boolean": tBoolean, "object": tObject, "array": tArray,
	"number": tNumber | tInteger, "integer": tInteger, "string": tString,
}

// fastNode is one compiled schema node.
type fastNode struct {
	refuseAll bool
	types     jsonType // 0: any
	props     map[string]*fastNode
	required  []string
	// keys are the names of props and required together, looked up by
	// the scanner (a short slice scans faster than a map hashes); keyMap
	// indexes them when there are many.
	keys    []fastKey
	keyMap  map[string]int
	reqMask uint64 // the bits of every required name
	// additional applies to properties not in props: nil allows any,
	// closed refuses them.
	additional *fastNode
	closed     bool
	items      *fastNode
	minItems   int
	maxItems   int // -1: none
	minLength  int
	maxLength  int // -1: none
	pattern    *pattern
	// Numeric bounds, exact integers only (a bound that is not one makes
	// the schema ineligible).
	minimum, maximum, exclMinimum, exclMaximum *int64
	multipleOf                                 int64 // 0: none
	enum                                       map[string]bool
	allOf, anyOf                               []*fastNode
}

// fastKeywords are the keywords the fast path knows: a schema using any
// other is validated by the library alone.
var fastKeywords = map[string]bool{
	"type": true, "properties": true, "required": true, "additionalProperties": true, "items": true,
	"minItems": true, "maxItems": true, "minLength": true, "maxLength": true, "pattern": true,
	"minimum": true, "maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true, "multipleOf": true,
	"enum": true, "allOf": true, "anyOf": true, "$ref": true,
	// Annotations (format is not asserted for 2020-12 schemas).
	"$defs": true, "definitions": true, "title": true, "description": true, "default": true, "examples": true,
	"$comment": true, "format": true, "deprecated": true, "readOnly": true, "writeOnly": true, "$schema": true,
}

const draft2020 = "https://json-schema.org/draft/2020-12/schema"

// compileFast returns the fast tree of doc, or nil when doc uses anything
// the fast path does not know.
func compileFast(doc any) *fastNode {
	if m, ok := doc.(map[string]any); ok {
		if s, ok := m["$schema"]; ok && s != draft2020 && s != draft2020+"#" {
			return nil
		}
	}
	c := fastCompiler{root: doc, byRef: map[string]*fastNode{}}
	n := c.node(doc, 0)
	if c.failed || loops(n, map[*fastNode]int{}) {
		return nil
	}
	return n
}

// loops reports whether a node reaches itself through allOf, anyOf and
// $ref alone, without going into a property or an item: the scanner would
// apply it to the same value again and again ({"anyOf":[{"$ref":"#"}]}).
// state: 1 while visiting, 2 done.
func loops(n *fastNode, state map[*fastNode]int) bool {
	switch state[n] {
	case 1:
		return true
	case 2:
		return false
	}
	state[n] = 1
	for _, s := range n.allOf {
		if loops(s, state) {
			return true
		}
	}
	for _, s := range n.anyOf {
		if loops(s, state) {
			return true
		}
	}
	state[n] = 2
	return false
}

type fastCompiler struct {
	root   any
	byRef  map[string]*fastNode
	failed bool
}

const maxFastDepth = 64

func (c *fastCompiler) fail() *fastNode { c.failed = true; return &fastNode{} }

func (c *fastCompiler) node(v any, depth int) *fastNode {
	if c.failed || depth > maxFastDepth {
		return c.fail()
	}
	if b, ok := v.(bool); ok {
		return &fastNode{refuseAll: !b, maxItems: -1, maxLength: -1}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return c.fail()
	}
	n := &fastNode{maxItems: -1, maxLength: -1}
	counts := map[string]*int{"minItems": &n.minItems, "maxItems": &n.maxItems, "minLength": &n.minLength, "maxLength": &n.maxLength}
	bounds := map[string]**int64{"minimum": &n.minimum, "maximum": &n.maximum, "exclusiveMinimum": &n.exclMinimum, "exclusiveMaximum": &n.exclMaximum}
	for k, kv := range m {
		if !fastKeywords[k] {
			return c.fail()
		}
		if p, ok := counts[k]; ok {
			*p = c.count(kv)
			continue
		}
		if p, ok := bounds[k]; ok {
			*p = c.int(kv)
			continue
		}
		switch k {
		case "$schema":
			if depth > 0 {
				return c.fail()
			}
		case "$ref":
			ref, ok := kv.(string)
			if !ok {
				return c.fail()
			}
			n.allOf = append(n.allOf, c.ref(ref, depth))
		case "type":
			n.types = c.types(kv)
		case "properties":
			pm, ok := kv.(map[string]any)
			if !ok {
				return c.fail()
			}
			n.props = make(map[string]*fastNode, len(pm))
			for name, ps := range pm {
				n.props[name] = c.node(ps, depth+1)
			}
		case "required":
			arr, ok := kv.([]any)
			if !ok {
				return c.fail()
			}
			for _, r := range arr {
				s, ok := r.(string)
				if !ok {
					return c.fail()
				}
				n.required = append(n.required, s)
			}
			if len(n.required) > 64 {
				return c.fail()
			}
		case "additionalProperties":
			if b, ok := kv.(bool); ok {
				n.closed = !b
			} else {
				n.additional = c.node(kv, depth+1)
			}
		case "items":
			if _, tuple := kv.([]any); tuple {
				return c.fail()
			}
			n.items = c.node(kv, depth+1)
		case "pattern":
			s, ok := kv.(string)
			if !ok {
				return c.fail()
			}
			pat, err := compilePattern(s)
			if err != nil {
				return c.fail()
			}
			n.pattern = pat
		case "multipleOf":
			if p := c.int(kv); p != nil && *p > 0 {
				n.multipleOf = *p
			} else {
				return c.fail()
			}
		case "enum":
			arr, ok := kv.([]any)
			if !ok {
				return c.fail()
			}
			n.enum = make(map[string]bool, len(arr))
			for _, e := range arr {
				s, ok := e.(string)
				if !ok {
					return c.fail() // numbers compare by value, objects deeply: the library's
				}
				n.enum[s] = true
			}
		case "allOf", "anyOf":
			arr, ok := kv.([]any)
			if !ok || len(arr) == 0 {
				return c.fail()
			}
			subs := make([]*fastNode, len(arr))
			for i, s := range arr {
				subs[i] = c.node(s, depth+1)
			}
			if k == "allOf" {
				n.allOf = append(n.allOf, subs...)
			} else {
				n.anyOf = subs
			}
		}
	}
	n.index()
	return n
}

// fastKey is a property name an object schema names.
type fastKey struct {
	name     string
	node     *fastNode // nil: not in properties (additionalProperties applies)
	declared bool
	bit      uint64 // its bit in the seen mask if required, else 0
}

// maxKeyScan is how many keys are looked up by scanning the slice.
const maxKeyScan = 16

// index builds n.keys from props and required.
func (n *fastNode) index() {
	at := map[string]int{}
	for name, ps := range n.props {
		at[name] = len(n.keys)
		n.keys = append(n.keys, fastKey{name: name, node: ps, declared: true})
	}
	for _, r := range n.required {
		i, ok := at[r]
		if !ok {
			i = len(n.keys)
			at[r] = i
			n.keys = append(n.keys, fastKey{name: r})
		}
		if n.keys[i].bit == 0 {
			n.keys[i].bit = 1 << bits.OnesCount64(n.reqMask)
			n.reqMask |= n.keys[i].bit
		}
	}
	if len(n.keys) > maxKeyScan {
		n.keyMap = at
	}
}

// key returns the entry of name, or nil.
func (n *fastNode) key(name []byte) *fastKey {
	if n.keyMap != nil {
		if i, ok := n.keyMap[string(name)]; ok {
			return &n.keys[i]
		}
		return nil
	}
	for i := range n.keys {
		if n.keys[i].name == string(name) {
			return &n.keys[i]
		}
	}
	return nil
}

// ref compiles a local reference once; a recursive one points back at the
// node being compiled.
func (c *fastCompiler) ref(ref string, depth int) *fastNode {
	if n, ok := c.byRef[ref]; ok {
		return n
	}
	target, ok := resolve(c.root, ref)
	if !ok {
		return c.fail()
	}
	n := &fastNode{}
	c.byRef[ref] = n
	*n = *c.node(target, depth+1)
	return n
}

func (c *fastCompiler) types(v any) jsonType {
	var out jsonType
	add := func(x any) {
		s, _ := x.(string)
		b, ok := typeBits[s]
		if !ok {
			c.failed = true
		}
		out |= b
	}
	switch t := v.(type) {
	case string:
		add(t)
	case []any:
		for _, x := range t {
			add(x)
		}
	default:
		c.failed = true
	}
	return out
}

func (c *fastCompiler) count(v any) int {
	p := c.int(v)
	if p == nil || *p < 0 || *p > 1<<31 {
		c.failed = true
		return 0
	}
	return int(*p)
}

func (c *fastCompiler) int(v any) *int64 {
	num, ok := v.(json.Number)
	if !ok {
		c.failed = true
		return nil
	}
	i, err := strconv.ParseInt(num.String(), 10, 64)
	if err == nil {
		return &i
	}
	// 10.0 or 1e3 as a bound.
	r, ok := new(big.Rat).SetString(num.String())
	if !ok || !r.IsInt() || !r.Num().IsInt64() {
		c.failed = true
		return nil
	}
	i = r.Num().Int64()
	return &i
}
