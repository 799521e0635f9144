package serde

import (
	"bytes"
	"encoding/json"
)

// compactJSON returns schema with insignificant whitespace removed, or schema
// itself if it is not valid JSON (a bare type name such as "string" parses as
// Avro but is passed on as given).
func compactJSON(schema string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(schema)); err != nil {
		return schema
	}
	return b.String()
}
