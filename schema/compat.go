package schema

import (
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Compatibility is a subject's compatibility mode, with Confluent Schema
// Registry's meanings.
type Compatibility string

// The compatibility modes. BACKWARD: the new schema reads data written
// with the latest one (upgrade readers first). FORWARD: the latest schema
// reads data written with the new one (upgrade writers first). FULL: both.
// The _TRANSITIVE forms check against every earlier version, not only the
// latest. NONE checks nothing.
const (
	Backward           Compatibility = "BACKWARD"
	BackwardTransitive Compatibility = "BACKWARD_TRANSITIVE"
	Forward            Compatibility = "FORWARD"
	ForwardTransitive  Compatibility = "FORWARD_TRANSITIVE"
	Full               Compatibility = "FULL"
	FullTransitive     Compatibility = "FULL_TRANSITIVE"
	None               Compatibility = "NONE"
)

// DefaultCompatibility is the mode of a subject nobody configured, as in
// Confluent's registry.
const DefaultCompatibility = Backward

// ParseCompatibility returns the mode named s (case-insensitive).
func ParseCompatibility(s string) (Compatibility, error) {
	c := Compatibility(strings.ToUpper(s))
	switch c {
	case Backward, BackwardTransitive, Forward, ForwardTransitive, Full, FullTransitive, None:
		return c, nil
	}
	return "", fmt.Errorf("%w: %q (one of BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, NONE)", ErrInvalidCompatibility, s)
}

func (c Compatibility) backward() bool {
	return c == Backward || c == BackwardTransitive || c == Full || c == FullTransitive
}

func (c Compatibility) forward() bool {
	return c == Forward || c == ForwardTransitive || c == Full || c == FullTransitive
}

func (c Compatibility) transitive() bool {
	return c == BackwardTransitive || c == ForwardTransitive || c == FullTransitive
}

// CheckCompatibility returns the incompatibilities of next with the
// earlier versions of a subject (earlier[i] is version i+1) under mode:
// none means next may be registered.
func CheckCompatibility(mode Compatibility, next *Schema, earlier []*Schema) []Incompatibility {
	if len(earlier) == 0 || mode == None {
		return nil
	}
	from := len(earlier) - 1
	if mode.transitive() {
		from = 0
	}
	var out []Incompatibility
	for i := len(earlier) - 1; i >= from; i-- {
		v := i + 1
		if mode.backward() {
			out = append(out, tag(Readable(earlier[i], next), v, "backward")...)
		}
		if mode.forward() {
			out = append(out, tag(Readable(next, earlier[i]), v, "forward")...)
		}
	}
	return out
}

func tag(ins []Incompatibility, version int, direction string) []Incompatibility {
	for i := range ins {
		ins[i].Version, ins[i].Direction = version, direction
	}
	return ins
}

// Readable returns why data written with schema writer may be refused by
// schema reader: every document writer accepts must be accepted by
// reader. The check is structural and conservative: a difference it
// cannot prove harmless is reported.
func Readable(writer, reader *Schema) []Incompatibility {
	c := &compat{wDoc: writer.doc, rDoc: reader.doc, active: map[nodePair]bool{}, budget: new(int), depth: new(int)}
	*c.budget = maxCompareSteps
	c.check("#", writer.doc, reader.doc)
	if *c.budget < 0 {
		return []Incompatibility{{Kind: "too_complex", Path: "#",
			Message: fmt.Sprintf("comparing the schemas takes more than %d steps or nests more than %d levels: simplify them", maxCompareSteps, maxCompareDepth)}}
	}
	return c.out
}

// maxCompareSteps bounds the work of one comparison: unions nested
// through $refs can make it exponential, and a registration must not be
// able to stall a node.
const maxCompareSteps = 100_000

// maxCompareDepth bounds how deep a comparison nests (and so the length
// of the paths it reports).
const maxCompareDepth = 256

type compat struct {
	wDoc, rDoc any
	// active holds the pairs of schema nodes being compared, so a recursive
	// schema is compared once (a pair met again is assumed compatible,
	// which is sound for recursive types).
	active map[nodePair]bool
	out    []Incompatibility
	budget *int // steps left, shared by the nested comparisons
	depth  *int // nesting of the current step, shared likewise
}

// nodePair names a writer and a reader node by their identity.
type nodePair struct{ w, r uintptr }

func (c *compat) report(path, kind, format string, args ...any) {
	c.out = append(c.out, Incompatibility{Kind: kind, Path: path, Message: fmt.Sprintf(format, args...)})
}

// fits reports, without reporting anything, whether writer's data fits
// reader.
func (c *compat) fits(path string, w, r any) bool {
	q := &compat{wDoc: c.wDoc, rDoc: c.rDoc, active: c.active, budget: c.budget, depth: c.depth}
	q.check(path, w, r)
	return len(q.out) == 0
}

// annotations are keywords that never refuse a document.
var annotations = map[string]bool{
	"$schema": true, "$id": true, "$anchor": true, "$comment": true, "$defs": true, "definitions": true,
	"title": true, "description": true, "default": true, "examples": true, "deprecated": true,
	"readOnly": true, "writeOnly": true, "format": true, "$vocabulary": true, "$dynamicAnchor": true,
}

// unmodelled are keywords compared only for equality.
var unmodelled = []string{
	"if", "then", "else", "patternProperties", "dependentSchemas", "dependentRequired", "dependencies",
	"propertyNames", "contains", "minContains", "maxContains", "unevaluatedProperties", "unevaluatedItems",
	"prefixItems", "additionalItems", "contentEncoding", "contentMediaType", "contentSchema", "$dynamicRef", "$recursiveRef",
}

const maxRefHops = 32

// deref follows node's $ref within doc. It returns the node reached and
// the refs followed ("" if none).
func (c *compat) deref(path string, doc, node any, side string) (any, string, bool) {
	var refs []string
	for hop := 0; hop < maxRefHops; hop++ {
		m, ok := node.(map[string]any)
		if !ok {
			return node, strings.Join(refs, ">"), true
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return node, strings.Join(refs, ">"), true
		}
		for k := range m {
			if k != "$ref" && !annotations[k] {
				c.report(path, "unsupported_ref", "the %s schema has keywords beside $ref (%q), which the checker does not compare", side, k)
				return nil, "", false
			}
		}
		target, ok := resolve(doc, ref)
		if !ok {
			c.report(path, "unsupported_ref", "the %s schema's $ref %q is not a pointer into the schema itself", side, ref)
			return nil, "", false
		}
		refs = append(refs, ref)
		node = target
	}
	c.report(path, "unsupported_ref", "the %s schema's $refs chain more than %d times", side, maxRefHops)
	return nil, "", false
}

// resolve finds a local JSON pointer reference ("#", "#/$defs/X").
func resolve(doc any, ref string) (any, bool) {
	if ref == "#" {
		return doc, true
	}
	if !strings.HasPrefix(ref, "#/") {
		return nil, false
	}
	node := doc
	for _, tok := range strings.Split(ref[2:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch n := node.(type) {
		case map[string]any:
			v, ok := n[tok]
			if !ok {
				return nil, false
			}
			node = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(n) {
				return nil, false
			}
			node = n[i]
		default:
			return nil, false
		}
	}
	return node, true
}

// object returns a schema node as a map: true is {}, false is nil.
func object(node any) (map[string]any, bool) {
	switch n := node.(type) {
	case bool:
		if n {
			return map[string]any{}, true
		}
		return nil, true
	case map[string]any:
		return n, true
	}
	return nil, false
}

func without(m map[string]any, keys ...string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if !slices.Contains(keys, k) {
			out[k] = v
		}
	}
	return out
}

func acceptsAll(m map[string]any) bool {
	for k := range m {
		if !annotations[k] {
			return false
		}
	}
	return true
}

// check reports why a document valid under w may be invalid under r.
func (c *compat) check(path string, w, r any) {
	if *c.budget--; *c.budget < 0 {
		return
	}
	w, wrefs, ok := c.deref(path, c.wDoc, w, "writer")
	if !ok {
		return
	}
	r, rrefs, ok := c.deref(path, c.rDoc, r, "reader")
	if !ok {
		return
	}
	if wrefs != "" || rrefs != "" {
		// Reached through a $ref: the same pair met again is a recursion,
		// assumed compatible (sound for recursive types).
		if wmap, ok := w.(map[string]any); ok {
			if rmap, ok := r.(map[string]any); ok {
				key := nodePair{reflect.ValueOf(wmap).Pointer(), reflect.ValueOf(rmap).Pointer()}
				if c.active[key] {
					return
				}
				c.active[key] = true
				defer delete(c.active, key)
			}
		}
	}
	if *c.depth++; *c.depth > maxCompareDepth {
		*c.depth--
		*c.budget = -1 // reported as too complex
		return
	}
	defer func() { *c.depth-- }()
	wm, ok := object(w)
	if !ok {
		c.report(path, "invalid_schema", "the writer's schema here is not an object or a boolean")
		return
	}
	rm, ok := object(r)
	if !ok {
		c.report(path, "invalid_schema", "the reader's schema here is not an object or a boolean")
		return
	}
	switch {
	case wm == nil: // false: the writer writes nothing here
		return
	case rm == nil:
		c.report(path, "schema_refuses_all", "the reader refuses every value here (false)")
		return
	case acceptsAll(rm):
		return
	}
	if c.combined(path, wm, rm) {
		return
	}
	wm, rm = without(wm, "anyOf", "oneOf", "allOf", "not"), without(rm, "anyOf", "oneOf", "allOf", "not")
	for _, k := range unmodelled {
		if rv, ok := rm[k]; ok && !sameJSON(rv, wm[k]) {
			c.report(path+"/"+k, "unsupported_keyword_changed", "%q differs between the schemas, and the checker only accepts it unchanged", k)
		}
	}
	wt := c.types(path, wm)
	c.valueSet(path, wm, rm)
	if !c.checkTypes(path, wt, rm) {
		return
	}
	if may(wt, "object") {
		c.objects(path, wm, rm)
	}
	if may(wt, "array") {
		c.arrays(path, wm, rm)
	}
	if may(wt, "string") {
		c.upper(path, wm, rm, "maxLength", "string length", false)
		c.lower(path, wm, rm, "minLength", "string length", false)
		if rp, ok := rm["pattern"]; ok && !sameJSON(rp, wm["pattern"]) {
			if _, had := wm["pattern"]; had {
				c.report(path+"/pattern", "pattern_changed", "the pattern changed from %s to %s", js(wm["pattern"]), js(rp))
			} else {
				c.report(path+"/pattern", "pattern_added", "the pattern %s was added", js(rp))
			}
		}
	}
	if may(wt, "number") || may(wt, "integer") {
		c.upper(path, wm, rm, "maximum", "maximum", true)
		c.lower(path, wm, rm, "minimum", "minimum", true)
		c.multipleOf(path, wm, rm)
	}
}

// combined handles anyOf, oneOf, allOf and not. It returns true when it
// has decided the whole comparison.
func (c *compat) combined(path string, wm, rm map[string]any) bool {
	if !sameJSON(wm["not"], rm["not"]) {
		if _, ok := rm["not"]; ok {
			c.report(path+"/not", "not_changed", "\"not\" differs between the schemas, and the checker only accepts it unchanged")
		}
	}
	if rb, ok := rm["allOf"].([]any); ok {
		// Data fits all of the reader's branches if it fits each.
		for i, b := range rb {
			c.check(fmt.Sprintf("%s/allOf/%d", path, i), wm, b)
		}
		c.check(path, wm, without(rm, "allOf"))
		return true
	}
	if wb, ok := wm["allOf"].([]any); ok {
		// The writer's data fits all its branches: one fitting is enough.
		rest := without(wm, "allOf")
		if c.fits(path, rest, rm) {
			return true
		}
		for _, b := range wb {
			if c.fits(path, b, rm) {
				return true
			}
		}
		c.check(path, rest, rm) // reports why
		return true
	}
	runion, rkw := union(rm)
	wunion, wkw := union(wm)
	switch {
	case runion != nil:
		writers := []any{without(wm, "anyOf", "oneOf")}
		wpath := []string{path}
		if wunion != nil {
			writers, wpath = wunion, nil
			for i := range wunion {
				wpath = append(wpath, fmt.Sprintf("%s/%s/%d", path, wkw, i))
			}
		}
		for i, w := range writers {
			if !slices.ContainsFunc(runion, func(r any) bool { return c.fits(wpath[i], w, r) }) {
				c.report(wpath[i], "combined_type_narrowed", "data written under this schema matches none of the reader's %q branches", rkw)
			}
		}
		c.check(path, without(wm, "anyOf", "oneOf"), without(rm, "anyOf", "oneOf"))
		return true
	case wunion != nil:
		for i, w := range wunion {
			c.check(fmt.Sprintf("%s/%s/%d", path, wkw, i), w, rm)
		}
		return true
	}
	return false
}

func union(m map[string]any) ([]any, string) {
	if b, ok := m["anyOf"].([]any); ok {
		return b, "anyOf"
	}
	if b, ok := m["oneOf"].([]any); ok {
		return b, "oneOf"
	}
	return nil, ""
}

// types returns the set of JSON types a schema allows, nil for any.
func (c *compat) types(path string, m map[string]any) map[string]bool {
	switch t := m["type"].(type) {
	case string:
		return map[string]bool{t: true}
	case []any:
		out := map[string]bool{}
		for _, v := range t {
			if s, ok := v.(string); ok {
				out[s] = true
			}
		}
		return out
	}
	return nil
}

func may(types map[string]bool, t string) bool {
	return types == nil || types[t] || (t == "integer" && types["number"])
}

// checkTypes reports writer types the reader refuses. It returns false
// when nothing further is worth comparing (no type in common).
func (c *compat) checkTypes(path string, wt map[string]bool, rm map[string]any) bool {
	rt := c.types(path, rm)
	if rt == nil {
		return true
	}
	if wt == nil {
		c.report(path+"/type", "type_added", "the reader requires type %s, the writer allowed any type", js(rm["type"]))
		return true
	}
	var lost []string
	for t := range wt {
		if !rt[t] && !(t == "integer" && rt["number"]) {
			lost = append(lost, t)
		}
	}
	if len(lost) == 0 {
		return true
	}
	sort.Strings(lost)
	if len(lost) == len(wt) {
		c.report(path+"/type", "type_changed", "the type changed from %s to %s", setString(wt), setString(rt))
		return false
	}
	c.report(path+"/type", "type_narrowed", "the type was narrowed from %s to %s: %s no longer accepted", setString(wt), setString(rt), strings.Join(lost, ", "))
	return true
}

func setString(s map[string]bool) string {
	out := make([]string, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	sort.Strings(out)
	return "[" + strings.Join(out, ", ") + "]"
}

// valueSet compares enum and const: every value the writer allows must
// be one the reader allows.
func (c *compat) valueSet(path string, wm, rm map[string]any) {
	wvals, wok := values(wm)
	rvals, rok := values(rm)
	if !rok {
		return
	}
	kw := "enum"
	if _, ok := rm["const"]; ok {
		kw = "const"
	}
	if !wok {
		c.report(path+"/"+kw, "enum_added", "the reader allows only %s, the writer allowed other values", js(rm[kw]))
		return
	}
	var lost []string
	for _, v := range wvals {
		if !slices.Contains(rvals, v) {
			lost = append(lost, v)
		}
	}
	if len(lost) > 0 {
		c.report(path+"/"+kw, "enum_narrowed", "values the writer allowed are refused by the reader: %s", strings.Join(lost, ", "))
	}
}

// values returns the canonical JSON of each value enum or const allows.
func values(m map[string]any) ([]string, bool) {
	if v, ok := m["const"]; ok {
		return []string{js(v)}, true
	}
	e, ok := m["enum"].([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, len(e))
	for i, v := range e {
		out[i] = js(v)
	}
	return out, true
}

// objects compares properties, required and additionalProperties.
func (c *compat) objects(path string, wm, rm map[string]any) {
	wp, _ := wm["properties"].(map[string]any)
	rp, _ := rm["properties"].(map[string]any)
	wAdd, wHas := wm["additionalProperties"]
	rAdd, rHas := rm["additionalProperties"]
	if !wHas {
		wAdd = true
	}
	if !rHas {
		rAdd = true
	}
	for _, name := range sortedKeys(rp) {
		p := path + "/properties/" + escape(name)
		if ws, ok := wp[name]; ok {
			c.check(p, ws, rp[name])
			continue
		}
		// The writer's data holds name only as an additional property.
		switch {
		case isFalse(wAdd):
			// Never written: only "required" can break, checked below.
		case isTrue(wAdd):
			if !c.fits(p, true, rp[name]) {
				c.report(p, "property_added_to_open_content_model",
					"property %q was added with constraints, but the writer's open content model allowed any value under that name", name)
			}
		default:
			c.check(p, wAdd, rp[name])
		}
	}
	for _, name := range sortedKeys(wp) {
		if _, ok := rp[name]; ok {
			continue
		}
		p := path + "/properties/" + escape(name)
		switch {
		case isFalse(rAdd):
			c.report(p, "property_removed_from_closed_content_model",
				"property %q was removed, and the reader's closed content model refuses it in data that has it", name)
		case isTrue(rAdd):
		default:
			c.check(p, wp[name], rAdd)
		}
	}
	// Properties neither schema names.
	switch {
	case isFalse(rAdd) && !isFalse(wAdd):
		c.report(path+"/additionalProperties", "content_model_closed",
			"the reader's content model is closed (additionalProperties false), the writer's was not")
	case !isTrue(rAdd) && !isFalse(rAdd) && !isFalse(wAdd):
		c.check(path+"/additionalProperties", wAdd, rAdd)
	}
	wreq := stringSet(wm["required"])
	for _, name := range sortedKeys(stringSet(rm["required"])) {
		if !wreq[name] {
			c.report(path+"/required", "required_property_added", "property %q is required by the reader but optional for the writer", name)
		}
	}
	c.upper(path, wm, rm, "maxProperties", "number of properties", false)
	c.lower(path, wm, rm, "minProperties", "number of properties", false)
}

func (c *compat) arrays(path string, wm, rm map[string]any) {
	if ri, ok := rm["items"]; ok {
		if _, tuple := ri.([]any); tuple {
			if !sameJSON(ri, wm["items"]) {
				c.report(path+"/items", "unsupported_keyword_changed", "tuple \"items\" differ between the schemas")
			}
		} else {
			wi, ok := wm["items"]
			if !ok {
				wi = true
			}
			c.check(path+"/items", wi, ri)
		}
	}
	c.upper(path, wm, rm, "maxItems", "number of items", false)
	c.lower(path, wm, rm, "minItems", "number of items", false)
	if isTrue(rm["uniqueItems"]) && !isTrue(wm["uniqueItems"]) {
		c.report(path+"/uniqueItems", "unique_items_added", "the reader requires unique items, the writer did not")
	}
}

// upper checks that the reader's upper bound kw is at least the writer's.
// numeric also accounts for exclusiveMaximum.
func (c *compat) upper(path string, wm, rm map[string]any, kw, what string, numeric bool) {
	c.bound(path, wm, rm, kw, what, numeric, 1)
}

func (c *compat) lower(path string, wm, rm map[string]any, kw, what string, numeric bool) {
	c.bound(path, wm, rm, kw, what, numeric, -1)
}

// bound compares the writer's and the reader's bound kw (and, if numeric,
// its exclusive form). dir is 1 for an upper bound, -1 for a lower one.
func (c *compat) bound(path string, wm, rm map[string]any, kw, what string, numeric bool, dir int) {
	type limit struct {
		v         *big.Rat
		exclusive bool
	}
	get := func(m map[string]any) (limit, bool) {
		var best limit
		found := false
		keys := []string{kw}
		if numeric {
			keys = append(keys, "exclusive"+strings.ToUpper(kw[:1])+kw[1:])
		}
		for i, k := range keys {
			v, ok := rat(m[k])
			if !ok {
				continue
			}
			l := limit{v, i == 1}
			if !found || dir*v.Cmp(best.v) < 0 || (v.Cmp(best.v) == 0 && l.exclusive) {
				best = l
			}
			found = true
		}
		return best, found
	}
	rl, ok := get(rm)
	if !ok {
		return
	}
	if !numeric && dir < 0 && rl.v.Sign() <= 0 {
		return // a minimum of 0 items or characters refuses nothing
	}
	wl, ok := get(wm)
	name := kw
	if rl.exclusive {
		name = "exclusive" + strings.ToUpper(kw[:1]) + kw[1:]
	}
	if !ok {
		c.report(path+"/"+name, kw+"_added", "the reader bounds the %s (%s %s), the writer did not", what, name, rl.v.RatString())
		return
	}
	cmp := dir * wl.v.Cmp(rl.v)
	if cmp > 0 || (cmp == 0 && rl.exclusive && !wl.exclusive) {
		change := "decreased"
		if dir < 0 {
			change = "increased"
		}
		c.report(path+"/"+name, kw+"_"+change, "the %s bound %s from %s to %s", what, change, wl.v.RatString(), rl.v.RatString())
	}
}

func (c *compat) multipleOf(path string, wm, rm map[string]any) {
	r, ok := rat(rm["multipleOf"])
	if !ok || r.Sign() == 0 {
		return
	}
	w, ok := rat(wm["multipleOf"])
	if ok && new(big.Rat).Quo(w, r).IsInt() {
		return
	}
	c.report(path+"/multipleOf", "multiple_of_changed", "the reader requires multiples of %s, which the writer's data need not be", r.RatString())
}

func rat(v any) (*big.Rat, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return nil, false
	}
	r, ok := new(big.Rat).SetString(n.String())
	return r, ok
}

func isTrue(v any) bool  { b, ok := v.(bool); return ok && b }
func isFalse(v any) bool { b, ok := v.(bool); return ok && !b }

func stringSet(v any) map[string]bool {
	out := map[string]bool{}
	if a, ok := v.([]any); ok {
		for _, s := range a {
			if s, ok := s.(string); ok {
				out[s] = true
			}
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func escape(name string) string {
	return strings.ReplaceAll(strings.ReplaceAll(name, "~", "~0"), "/", "~1")
}

// js renders a JSON value canonically (sorted keys).
func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func sameJSON(a, b any) bool { return js(a) == js(b) }
