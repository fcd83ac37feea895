package schema

import (
	"bytes"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// fastSchemas cover every keyword the fast path compiles.
var fastSchemas = []string{
	`{"type":"object","properties":{"customer":{"type":"string","minLength":1,"maxLength":8},
	  "items":{"type":"array","minItems":1,"maxItems":3,"items":{"type":"object","properties":{
	    "sku":{"type":"string","pattern":"^[a-z0-9-]+$"},"qty":{"type":"integer","minimum":1,"maximum":100},
	    "price":{"type":"number","exclusiveMinimum":0,"exclusiveMaximum":1000,"multipleOf":5}},
	    "required":["sku","qty"],"additionalProperties":false}},
	  "tag":{"enum":["a","b","ü"]}},"required":["customer"],"additionalProperties":{"type":["string","null","boolean"]}}`,
	`{"$ref":"#/$defs/N","$defs":{"N":{"type":"object","properties":{"v":{"type":"integer"},
	  "next":{"anyOf":[{"$ref":"#/$defs/N"},{"type":"null"}]}},"required":["v"]}}}`,
	`{"allOf":[{"type":"object","required":["a"]},{"properties":{"a":{"type":"string","maxLength":2}}}]}`,
	`{"anyOf":[{"type":"integer","minimum":10},{"type":"string"}]}`,
	`{"type":"array","items":{"type":["integer","boolean"]}}`,
	`true`,
	`false`,
}

// TestFastPathCompilesTheseSchemas: the schemas above must take the fast
// path, or the fuzz test checks nothing.
func TestFastPathCompilesTheseSchemas(t *testing.T) {
	for _, s := range fastSchemas {
		sch, err := Parse([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		if sch.fast == nil {
			t.Fatalf("not on the fast path: %s", s)
		}
	}
	for _, s := range []string{`{"oneOf":[{}]}`, `{"const":1}`, `{"enum":[1]}`, `{"minimum":1.5}`, `{"$schema":"http://json-schema.org/draft-07/schema#"}`,
		`{"anyOf":[{"$ref":"#"},{"type":"string"}]}`, `{"$defs":{"a":{"allOf":[{"$ref":"#/$defs/b"}]},"b":{"anyOf":[{"$ref":"#/$defs/a"}]}},"$ref":"#/$defs/a"}`} {
		sch, err := Parse([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		if sch.fast != nil {
			t.Fatalf("on the fast path, which does not know it: %s", s)
		}
	}
}

// FuzzFastPathAgreesWithLibrary: whatever the fast path accepts, the
// library accepts (the fast path is only ever a shortcut to "valid").
func FuzzFastPathAgreesWithLibrary(f *testing.F) {
	for _, seed := range []string{
		`{"customer":"ann","items":[{"sku":"a-1","qty":2,"price":5}],"tag":"ü","x":null}`,
		`{"customer":"","items":[]}`, `{"customer":"ann","items":[{"sku":"A","qty":0}]}`,
		`{"customer":"\u00e4nn","items":[{"sku":"b","qty":100,"price":995}],"y":true}`,
		`{"v":1,"next":{"v":2,"next":null}}`, `{"v":1,"next":{"v":"x"}}`, `{"a":"xy"}`, `{"a":"xyz"}`,
		`12`, `9`, `"s"`, `[1,true,2.0]`, `[1e2]`, `{"v":1} x`, `{"v":1,}`, `[1,]`, `"\ud800"`, `-0`, `01`,
		`{"customer":"a","customer":1}`, `{"v":9223372036854775808}`, "\"a\x01\"", `{"a":"\"\\"}`,
	} {
		f.Add([]byte(seed))
	}
	type pair struct {
		fast *fastNode
		lib  *jsonschema.Schema
	}
	var pairs []pair
	for _, s := range fastSchemas {
		sch, err := Parse([]byte(s))
		if err != nil {
			f.Fatal(err)
		}
		pairs = append(pairs, pair{sch.fast, sch.compiled})
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for i, p := range pairs {
			if !p.fast.validJSON(data) {
				continue
			}
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("schema %d: the fast path accepts %q, which is not JSON: %v", i, data, err)
			}
			if err := p.lib.Validate(inst); err != nil {
				t.Fatalf("schema %d: the fast path accepts %q, the library refuses it: %v", i, data, err)
			}
		}
	})
}

// TestFastPathDecides: valid documents take the shortcut; invalid ones and
// those it is unsure of do not.
func TestFastPathDecides(t *testing.T) {
	sch, err := Parse([]byte(fastSchemas[0]))
	if err != nil {
		t.Fatal(err)
	}
	for doc, want := range map[string]bool{
		`{"customer":"ann","items":[{"sku":"a-1","qty":2,"price":5}],"tag":"ü","x":null}`: true,
		`{"customer":"\u00e4nn","items":[{"sku":"b","qty":100}]}`:                         true,
		`{"customer":"ann","items":[{"sku":"b","qty":101}]}`:                              false, // maximum
		`{"customer":"ann","items":[{"sku":"B","qty":1}]}`:                                false, // pattern
		`{"customer":"ann","items":[{"sku":"b","qty":1,"price":3}]}`:                      false, // multipleOf
		`{"customer":"ann","items":[{"sku":"b","qty":1.0}]}`:                              false, // not sure: the library decides
		`{"items":[{"sku":"b","qty":1}]}`:                                                 false, // required
		`{"customer":"ann","items":[{"sku":"b","qty":1}],"x":1}`:                          false, // additionalProperties
		`{"customer":"ann","items":[{"sku":"b","qty":1}]} {}`:                             false, // trailing data
	} {
		if got := sch.fast.validJSON([]byte(doc)); got != want {
			t.Errorf("%s: fast path says %v, want %v", doc, got, want)
		}
		if _, _, ok := sch.Validate([]byte(doc)); want && !ok {
			t.Errorf("%s: refused", doc)
		}
	}
}
