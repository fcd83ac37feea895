package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// MaxSchemaBytes bounds a schema's text.
const MaxSchemaBytes = 256 << 10

// schemaURL is where a schema is compiled from. No loader is set, so a
// $ref outside the schema itself fails to compile: a schema can never make
// a node fetch anything.
const schemaURL = "https://schemas.esraft.invalid/schema.json"

// Schema is a parsed and compiled JSON Schema. It is immutable and safe
// for concurrent use.
type Schema struct {
	// canonical is the schema as compact JSON with sorted keys: what the
	// registry stores and compares.
	canonical string
	doc       any
	compiled  *jsonschema.Schema
	fast      *fastNode // nil: the library validates every document
}

// Parse parses and compiles a JSON Schema (draft 2020-12 unless its
// "$schema" names another draft). Errors wrap ErrInvalidSchema.
func Parse(text []byte) (*Schema, error) {
	if len(text) > MaxSchemaBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidSchema, len(text), MaxSchemaBytes)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("%w: not JSON: %v", ErrInvalidSchema, err)
	}
	switch doc.(type) {
	case map[string]any, bool:
	default:
		return nil, fmt.Errorf("%w: a schema is a JSON object or a boolean", ErrInvalidSchema)
	}
	if n := expandedSize(doc, maxExpandedNodes); n > maxExpandedNodes {
		return nil, fmt.Errorf("%w: with its $refs expanded the schema has more than %d nodes", ErrInvalidSchema, maxExpandedNodes)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSchema, err)
	}
	compiled, err := c.Compile(schemaURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSchema, err)
	}
	canonical, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSchema, err)
	}
	return &Schema{canonical: string(canonical), doc: doc, compiled: compiled, fast: compileFast(doc)}, nil
}

// String returns the schema as compact JSON with sorted keys.
func (s *Schema) String() string { return s.canonical }

// Equal reports whether two schemas are the same JSON document.
func (s *Schema) Equal(o *Schema) bool { return s.canonical == o.canonical }

// maxExpandedNodes bounds a schema's size with its $refs expanded (a
// recursive $ref counts once): validating an event, or comparing two
// schemas, costs up to that many steps, and $refs shared by unions would
// otherwise make it exponential in the schema's text.
const maxExpandedNodes = 100_000

// expandedSize counts the JSON values of doc with local $refs replaced by
// their targets, stopping once past limit.
func expandedSize(doc any, limit int) int {
	memo := map[string]int{}
	var walk func(v any, inProgress map[string]bool) int
	walk = func(v any, inProgress map[string]bool) int {
		n := 1
		switch x := v.(type) {
		case map[string]any:
			for k, sub := range x {
				if ref, ok := sub.(string); ok && k == "$ref" {
					switch size, done := memo[ref]; {
					case done:
						n += size
					case inProgress[ref]:
						n++ // recursion: bounded by the document's depth
					default:
						target, ok := resolve(doc, ref)
						if !ok {
							n++
							continue
						}
						inProgress[ref] = true
						size := walk(target, inProgress)
						delete(inProgress, ref)
						memo[ref] = size
						n += size
					}
				} else {
					n += walk(sub, inProgress)
				}
				if n > limit {
					return n
				}
			}
		case []any:
			for _, sub := range x {
				if n += walk(sub, inProgress); n > limit {
					return n
				}
			}
		}
		return n
	}
	return walk(doc, map[string]bool{})
}

var printer = message.NewPrinter(language.English)

// Validate checks a JSON document against the schema. On failure it
// returns the JSON pointer of the offending value in the document ("" for
// the whole of it) and what is wrong there.
func (s *Schema) Validate(data []byte) (path, reason string, ok bool) {
	if s.fast != nil && s.fast.validJSON(data) {
		return "", "", true
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return "", "not JSON: " + err.Error(), false
	}
	err = s.compiled.Validate(inst)
	if err == nil {
		return "", "", true
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return "", err.Error(), false
	}
	// The first leaf is the most specific failure: the one a person fixes.
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	return pointer(ve.InstanceLocation), ve.ErrorKind.LocalizedString(printer), false
}

// pointer renders tokens as a JSON pointer (RFC 6901).
func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		t = strings.ReplaceAll(t, "~", "~0")
		b.WriteString(strings.ReplaceAll(t, "/", "~1"))
	}
	return b.String()
}
