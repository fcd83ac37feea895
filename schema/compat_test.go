package schema_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/schema"
)

func mustParse(t testing.TB, s string) *schema.Schema {
	t.Helper()
	sch, err := schema.Parse([]byte(s))
	require.NoError(t, err, s)
	return sch
}

// compatCases are schema changes (old -> new) with the verdicts that
// follow Confluent's documented rules for JSON Schema: BACKWARD holds when
// the new schema reads data of the old, FORWARD when the old reads data of
// the new, FULL when both hold. path is the schema path the first
// breaking difference must be reported at ("" when both hold).
var compatCases = []struct {
	name          string
	old, new      string
	backward, fwd bool
	path          string
}{
	{"closed: add optional property", `{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}`,
		`{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}},"additionalProperties":false}`, true, false, "#/properties/b"},
	{"closed: remove optional property", `{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}},"additionalProperties":false}`,
		`{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}`, false, true, "#/properties/b"},
	{"open: add optional property", `{"type":"object","properties":{"a":{"type":"string"}}}`,
		`{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}}}`, false, true, "#/properties/b"},
	{"open: remove optional property", `{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}}}`,
		`{"type":"object","properties":{"a":{"type":"string"}}}`, true, false, "#/properties/b"},
	{"open: add required property", `{"type":"object","properties":{"a":{"type":"string"}}}`,
		`{"type":"object","properties":{"a":{"type":"string"},"b":{}},"required":["b"]}`, false, true, "#/required"},
	{"optional property made required", `{"type":"object","properties":{"a":{"type":"string"}}}`,
		`{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}`, false, true, "#/required"},
	{"required property made optional", `{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}`,
		`{"type":"object","properties":{"a":{"type":"string"}}}`, true, false, "#/required"},
	{"type changed string to integer", `{"type":"object","properties":{"a":{"type":"string"}}}`,
		`{"type":"object","properties":{"a":{"type":"integer"}}}`, false, false, "#/properties/a/type"},
	{"type widened integer to number", `{"type":"integer"}`, `{"type":"number"}`, true, false, "#/type"},
	{"type made nullable", `{"type":"string"}`, `{"type":["string","null"]}`, true, false, "#/type"},
	{"enum value added", `{"enum":["red","green"]}`, `{"enum":["red","green","blue"]}`, true, false, "#/enum"},
	{"enum value removed", `{"enum":["red","green","blue"]}`, `{"enum":["red","green"]}`, false, true, "#/enum"},
	{"maxLength increased", `{"type":"string","maxLength":10}`, `{"type":"string","maxLength":20}`, true, false, "#/maxLength"},
	{"maxLength added", `{"type":"string"}`, `{"type":"string","maxLength":20}`, false, true, "#/maxLength"},
	{"minimum raised", `{"type":"integer","minimum":0}`, `{"type":"integer","minimum":10}`, false, true, "#/minimum"},
	{"pattern added", `{"type":"string"}`, `{"type":"string","pattern":"^[a-z]+$"}`, false, true, "#/pattern"},
	{"array item type changed", `{"type":"array","items":{"type":"string"}}`, `{"type":"array","items":{"type":"integer"}}`, false, false, "#/items/type"},
	{"nested type changed behind $ref",
		`{"type":"object","properties":{"addr":{"$ref":"#/$defs/Addr"}},"$defs":{"Addr":{"type":"object","properties":{"zip":{"type":"string"}}}}}`,
		`{"type":"object","properties":{"addr":{"$ref":"#/$defs/Addr"}},"$defs":{"Addr":{"type":"object","properties":{"zip":{"type":"integer"}}}}}`,
		false, false, "#/properties/addr/properties/zip/type"},
	{"partially open: add property matching additionalProperties", `{"type":"object","additionalProperties":{"type":"string"}}`,
		`{"type":"object","properties":{"note":{"type":"string"}},"additionalProperties":{"type":"string"}}`, true, true, ""},
	{"partially open: add property not matching additionalProperties", `{"type":"object","additionalProperties":{"type":"string"}}`,
		`{"type":"object","properties":{"qty":{"type":"integer"}},"additionalProperties":{"type":"string"}}`, false, false, "#/properties/qty/type"},
	{"anyOf branch added", `{"anyOf":[{"type":"string"}]}`, `{"anyOf":[{"type":"string"},{"type":"integer"}]}`, true, false, "#/anyOf/1"},
	{"unchanged", `{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}`,
		`{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}`, true, true, ""},
	{"only annotations changed", `{"type":"string","description":"old"}`, `{"type":"string","description":"new","title":"T"}`, true, true, ""},
	{"uniqueItems added", `{"type":"array"}`, `{"type":"array","uniqueItems":true}`, false, true, "#/uniqueItems"},
	{"open model closed", `{"type":"object","properties":{"a":{}}}`, `{"type":"object","properties":{"a":{}},"additionalProperties":false}`, false, true, "#/additionalProperties"},
	{"multipleOf made stricter", `{"type":"integer","multipleOf":2}`, `{"type":"integer","multipleOf":4}`, false, true, "#/multipleOf"},
	{"recursive schema unchanged", `{"$defs":{"N":{"type":"object","properties":{"next":{"$ref":"#/$defs/N"}}}},"$ref":"#/$defs/N"}`,
		`{"$defs":{"N":{"type":"object","properties":{"next":{"$ref":"#/$defs/N"}}}},"$ref":"#/$defs/N"}`, true, true, ""},
}

func TestCompatibilityTable(t *testing.T) {
	require.GreaterOrEqual(t, len(compatCases), 20)
	for _, tc := range compatCases {
		t.Run(tc.name, func(t *testing.T) {
			old, next := mustParse(t, tc.old), mustParse(t, tc.new)
			earlier := []*schema.Schema{old}
			verdict := func(m schema.Compatibility) []schema.Incompatibility {
				return schema.CheckCompatibility(m, next, earlier)
			}
			for _, m := range []struct {
				mode schema.Compatibility
				want bool
			}{
				{schema.Backward, tc.backward}, {schema.BackwardTransitive, tc.backward},
				{schema.Forward, tc.fwd}, {schema.ForwardTransitive, tc.fwd},
				{schema.Full, tc.backward && tc.fwd}, {schema.FullTransitive, tc.backward && tc.fwd},
				{schema.None, true},
			} {
				got := verdict(m.mode)
				require.Equal(t, m.want, len(got) == 0, "%s: %v", m.mode, got)
				for _, in := range got {
					require.Equal(t, 1, in.Version)
					require.NotEmpty(t, in.Kind)
					require.NotEmpty(t, in.Message)
				}
			}
			if tc.path != "" {
				got := append(verdict(schema.Backward), verdict(schema.Forward)...)
				require.NotEmpty(t, got)
				require.Equal(t, tc.path, got[0].Path, "%v", got)
			}
		})
	}
}

// TestTransitiveModes: version 3 reads version 2's data but not version
// 1's, so BACKWARD accepts it and BACKWARD_TRANSITIVE refuses it, naming
// version 1.
func TestTransitiveModes(t *testing.T) {
	v1 := mustParse(t, `{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}`)
	v2 := mustParse(t, `{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false}`)
	v3 := mustParse(t, `{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false}`)
	earlier := []*schema.Schema{v1, v2}
	require.Empty(t, schema.CheckCompatibility(schema.Backward, v3, earlier))
	got := schema.CheckCompatibility(schema.BackwardTransitive, v3, earlier)
	require.Len(t, got, 1)
	require.Equal(t, 1, got[0].Version)
	require.Equal(t, "backward", got[0].Direction)
	require.Equal(t, "required_property_added", got[0].Kind)
	require.Equal(t, "#/required", got[0].Path)
}

// TestForwardTransitiveModes: version 1 requires a, version 2 made it
// optional and version 3 is version 2 again. Version 1's readers cannot
// read version 3's data (a may be missing), version 2's can, so FORWARD
// and FULL accept it while FORWARD_TRANSITIVE and FULL_TRANSITIVE refuse
// it, naming version 1; BACKWARD_TRANSITIVE accepts it (version 3 reads
// every earlier version's data).
func TestForwardTransitiveModes(t *testing.T) {
	v1 := mustParse(t, `{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false}`)
	v2 := mustParse(t, `{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}`)
	v3 := mustParse(t, `{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}`)
	earlier := []*schema.Schema{v1, v2}
	for _, m := range []schema.Compatibility{schema.Forward, schema.Full, schema.BackwardTransitive} {
		require.Empty(t, schema.CheckCompatibility(m, v3, earlier), "%s", m)
	}
	for _, m := range []schema.Compatibility{schema.ForwardTransitive, schema.FullTransitive} {
		got := schema.CheckCompatibility(m, v3, earlier)
		require.Len(t, got, 1, "%s: %v", m, got)
		require.Equal(t, 1, got[0].Version, "%s", m)
		require.Equal(t, "forward", got[0].Direction, "%s", m)
		require.Equal(t, "required_property_added", got[0].Kind, "%s", m)
		require.Equal(t, "#/required", got[0].Path, "%s", m)
	}
}

func TestParseRefusesBadSchemas(t *testing.T) {
	for _, s := range []string{
		`not json`,
		`{"type":"object"} trailing`,
		`[1,2]`,
		`{"type":12}`,
		`{"$ref":"https://example.com/other.json"}`,
		`{"$ref":"other.json"}`,
		`{"description":"` + strings.Repeat("x", schema.MaxSchemaBytes) + `"}`,
	} {
		_, err := schema.Parse([]byte(s))
		require.ErrorIs(t, err, schema.ErrInvalidSchema, s)
	}
}

func TestValidateNamesThePath(t *testing.T) {
	s := mustParse(t, `{"type":"object","properties":{"lines":{"type":"array","items":{"type":"object","properties":{"qty":{"type":"integer","minimum":1}}}}}}`)
	path, reason, ok := s.Validate([]byte(`{"lines":[{"qty":1},{"qty":"two"}]}`))
	require.False(t, ok)
	require.Equal(t, "/lines/1/qty", path)
	require.Contains(t, reason, "string")
	_, reason, ok = s.Validate([]byte(`{"lines":`))
	require.False(t, ok)
	require.Contains(t, reason, "not JSON")
	_, _, ok = s.Validate([]byte(`{"lines":[{"qty":3}]}`))
	require.True(t, ok)
}

// TestCompatibilityWorkIsBounded: unions nested through $refs would make
// the comparison exponential; it stops and refuses instead.
func TestCompatibilityWorkIsBounded(t *testing.T) {
	nested := func(depth int, leaf string) string {
		defs := `"D0":` + leaf
		for i := 1; i <= depth; i++ {
			defs += fmt.Sprintf(`,"D%d":{"anyOf":[{"$ref":"#/$defs/D%d"},{"$ref":"#/$defs/D%d"}]}`, i, i-1, i-1)
		}
		return fmt.Sprintf(`{"$defs":{%s},"$ref":"#/$defs/D%d"}`, defs, depth)
	}
	// Too large to register at all.
	_, err := schema.Parse([]byte(nested(40, `{"type":"string"}`)))
	require.ErrorIs(t, err, schema.ErrInvalidSchema)
	require.ErrorContains(t, err, "more than 100000 nodes")
	// Small enough to register, too costly to compare: the writer's
	// branches fit none of the reader's, so every pair is tried.
	a := mustParse(t, nested(11, `{"type":["string","null"]}`))
	b := mustParse(t, nested(11, `{"type":"string"}`))
	start := time.Now()
	got := schema.Readable(a, b)
	require.Less(t, time.Since(start), 10*time.Second)
	require.Len(t, got, 1)
	require.Equal(t, "too_complex", got[0].Kind)
}

// FuzzParse: any bytes either parse as a schema or are refused with
// ErrInvalidSchema; a parsed schema validates documents and compares with
// itself without failing.
func FuzzParse(f *testing.F) {
	for _, c := range compatCases {
		f.Add([]byte(c.old))
		f.Add([]byte(c.new))
	}
	f.Add([]byte(`{"$ref":"#/$defs/a","$defs":{"a":{"$ref":"#/$defs/a"}}}`))
	f.Add([]byte(`{"anyOf":[{"$ref":"#"}],"properties":{"x":{"$ref":"#/properties/x"}}}`))
	f.Add([]byte(`{"anyOf":[{"$ref":"#"},{"$ref":"#"},{"$ref":"#"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := schema.Parse(data)
		if err != nil {
			require.ErrorIs(t, err, schema.ErrInvalidSchema)
			return
		}
		s.Validate(data)
		s.Validate([]byte(`{"a":[1,"x",null,{"b":true}]}`))
		schema.Readable(s, s)
	})
}
