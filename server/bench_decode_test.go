package server

import (
	"strings"
	"testing"
)

func BenchmarkDecodeJSON8MiB(b *testing.B) {
	elem := `"` + strings.Repeat("<", 1022) + `"`
	body := `{"script": "def main(x): return len(x)", "input": [` + strings.Repeat(elem+", ", 8000) + `1]}`
	src := []byte(body)
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if _, err := decodeJSON(src, testConfig()); err != nil {
			b.Fatal(err)
		}
	}
}
