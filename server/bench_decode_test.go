package server

import (
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/sandbox-exec/pyexec/internal/cpuclock"
)

// The decoders' benchmarks: a body at the size cap (a long input), a
// typical small request, and a full batch, in JSON and msgpack. Bodies are
// built outside the timer; B/op is what decoding allocates.

func eightMiBInput() []any {
	elem := strings.Repeat("<", 1022)
	input := make([]any, 8000)
	for i := range input {
		input[i] = elem
	}
	return input
}

const smallScript = "def main(x):\n    return {\"sum\": sum(x[\"a\"]), \"b\": x[\"b\"]}\n"

func smallRequest() map[string]any {
	return map[string]any{"script": smallScript, "input": map[string]any{"a": []int{1, 2, 3}, "b": "text"}, "timeout_ms": 5000}
}

func batchRequest() map[string]any {
	inputs := make([]any, 100)
	for i := range inputs {
		inputs[i] = map[string]any{"id": i, "name": "item " + strconv.Itoa(i), "tags": []string{"a", "b"}}
	}
	return map[string]any{"script": smallScript, "inputs": inputs}
}

func benchDecode(b *testing.B, body []byte, decode func([]byte, *Config) (executeRequest, error)) {
	cfg := testConfig()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	cpu := cpuclock.Start()
	n := 0
	for b.Loop() {
		if _, err := decode(body, cfg); err != nil {
			b.Fatal(err)
		}
		n++
	}
	cpu.Report(b, n)
}

func BenchmarkDecodeJSON8MiB(b *testing.B) {
	elem := `"` + strings.Repeat("<", 1022) + `"`
	body := `{"script": "def main(x): return len(x)", "input": [` + strings.Repeat(elem+", ", 8000) + `1]}`
	benchDecode(b, []byte(body), decodeJSON)
}

func BenchmarkDecodeJSONSmall(b *testing.B) {
	// As Python's json.dumps writes it: a space after ',' and ':'.
	body := `{"script": "def main(x):\n    return {\"sum\": sum(x[\"a\"]), \"b\": x[\"b\"]}\n", "input": {"a": [1, 2, 3], "b": "text"}, "timeout_ms": 5000}`
	benchDecode(b, []byte(body), decodeJSON)
}

func BenchmarkDecodeJSONBatch(b *testing.B) {
	var body strings.Builder
	body.WriteString(`{"script": "def main(x): return x", "inputs": [`)
	for i := range 100 {
		if i > 0 {
			body.WriteString(", ")
		}
		body.WriteString(`{"id": ` + strconv.Itoa(i) + `, "name": "item ` + strconv.Itoa(i) + `", "tags": ["a", "b"]}`)
	}
	body.WriteString(`]}`)
	benchDecode(b, []byte(body.String()), decodeJSON)
}

func BenchmarkDecodeMsgpack8MiB(b *testing.B) {
	body, err := msgpack.Marshal(map[string]any{"script": "def main(x): return len(x)", "input": eightMiBInput()})
	if err != nil {
		b.Fatal(err)
	}
	benchDecode(b, body, decodeMsgpack)
}

func BenchmarkDecodeMsgpackSmall(b *testing.B) {
	body, err := msgpack.Marshal(smallRequest())
	if err != nil {
		b.Fatal(err)
	}
	benchDecode(b, body, decodeMsgpack)
}

func BenchmarkDecodeMsgpackBatch(b *testing.B) {
	body, err := msgpack.Marshal(batchRequest())
	if err != nil {
		b.Fatal(err)
	}
	benchDecode(b, body, decodeMsgpack)
}
