package msgpackcheck

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestCheckAcceptsWhatTheEncoderWrites(t *testing.T) {
	values := []any{
		nil, true, 1, -1, 300, -70000, uint64(1) << 40, 1.5, float32(2.5), "s", string(make([]byte, 300)),
		[]byte{1, 2}, make([]byte, 70000), []any{1, "a", nil}, map[string]any{"a": map[string]any{"b": []int{1}}},
		make([]int, 20), make([]int, 70000),
	}
	for _, v := range values {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(b, 32); err != nil {
			t.Errorf("%T: %v", v, err)
		}
	}
}

func TestCheckRefuses(t *testing.T) {
	for name, b := range map[string][]byte{
		"ext32 of 1.2 GB":    []byte("\xc9H\x13\x91t\xeb\x99"),
		"str32 past the end": {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'},
		"array32 huge":       {0xdd, 0x7f, 0xff, 0xff, 0xff, 0x01},
		"map16 short":        {0xde, 0x00, 0x02, 0xa1, 'a'},
		"reserved":           {0xc1},
		"empty":              {},
		"trailing":           {0x01, 0x02},
		"too deep":           {0x91, 0x91, 0x91, 0x91, 0x01},
	} {
		if err := Check(b, 3); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Whatever Check accepts, the decoder must decode without a huge allocation.
func FuzzCheck(f *testing.F) {
	f.Add([]byte("\x82\xa6script\xb5def main(x): return x\xa5input\x92\x01\xa1a"))
	f.Add([]byte("\xc9H\x13\x91t\xeb\x99"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if Check(b, 64) != nil {
			return
		}
		var v any
		_ = msgpack.Unmarshal(b, &v)
	})
}

var strict = Options{MaxDepth: 32, UTF8: true, NoExt: true, StrOrIntKeys: true, UniqueKeys: true}

func TestCheckWithAccepts(t *testing.T) {
	manyKeys := map[string]any{}
	for i := 0; i < 100; i++ {
		manyKeys[string(rune('a'+i%26))+string(rune('A'+i/26))] = map[int]any{i: i, -i - 1: []byte("x")}
	}
	values := []any{
		nil, "é😀", []byte{0xff, 0xfe}, map[string]any{"a": 1, "b": map[string]any{"a": 1}},
		map[int64]string{-1: "a", 1: "b", 1 << 40: "c", -(1 << 40): "d"},
		map[uint64]bool{1<<64 - 1: true, 0: false}, manyKeys,
		[]any{map[string]int{"a": 1}, map[string]int{"a": 2}},
	}
	for _, v := range values {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckWith(b, strict); err != nil {
			t.Errorf("%#v: %v", v, err)
		}
	}
	// Check keeps accepting what the strict rules refuse.
	for _, b := range [][]byte{{0xa1, 0xff}, {0xd4, 0x01, 0x00}, {0x82, 0x01, 0xc0, 0x01, 0xc0}, {0x81, 0xc0, 0xc0}} {
		if err := Check(b, 4); err != nil {
			t.Errorf("Check(% x): %v", b, err)
		}
	}
}

func TestCheckWithRefuses(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		msg  string
	}{
		{"invalid UTF-8 fixstr", []byte{0xa2, 'a', 0xff}, "str at byte 0 is not valid UTF-8"},
		{"invalid UTF-8 str8 in array", []byte{0x92, 0x01, 0xd9, 0x01, 0xc3}, "str at byte 2 is not valid UTF-8"},
		{"invalid UTF-8 str16", []byte{0xda, 0x00, 0x01, 0x80}, "not valid UTF-8"},
		{"invalid UTF-8 str32", []byte{0xdb, 0x00, 0x00, 0x00, 0x01, 0xfe}, "not valid UTF-8"},
		{"UTF-8 surrogate", []byte{0xa3, 0xed, 0xa0, 0x80}, "not valid UTF-8"},
		{"invalid UTF-8 key", []byte{0x81, 0xa1, 0xff, 0x01}, "str at byte 1 is not valid UTF-8"},
		{"fixext", []byte{0x91, 0xd4, 0x05, 0x00}, "ext value (type 5) at byte 1"},
		{"timestamp", []byte{0xd6, 0xff, 0, 0, 0, 0}, "ext value (type -1) at byte 0"},
		{"ext8", []byte{0xc7, 0x01, 0x02, 0x00}, "ext value (type 2)"},
		{"ext32", []byte{0xc9, 0, 0, 0, 1, 0x03, 0x00}, "ext value (type 3)"},
		{"nil key", []byte{0x81, 0xc0, 0x01}, "map key at byte 1 is not a str or an integer"},
		{"bin key", []byte{0x81, 0xc4, 0x01, 'a', 0x01}, "not a str or an integer"},
		{"float key", []byte{0x81, 0xca, 0, 0, 0, 0, 0x01}, "not a str or an integer"},
		{"array key", []byte{0x81, 0x90, 0x01}, "not a str or an integer"},
		{"duplicate str key", []byte{0x82, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02}, `map key "a" at byte 4 appears twice`},
		{"duplicate str key, other width", []byte{0x82, 0xa1, 'a', 0x01, 0xd9, 0x01, 'a', 0x02}, `map key "a" at byte 4 appears twice`},
		{"duplicate int key, other width", []byte{0x82, 0x01, 0xc0, 0xcd, 0x00, 0x01, 0xc0}, "map key 1 at byte 3 appears twice"},
		{"duplicate int key, signed type", []byte{0x82, 0x05, 0xc0, 0xd0, 0x05, 0xc0}, "map key 5 at byte 3"},
		{"duplicate negative key", []byte{0x82, 0xff, 0xc0, 0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc0}, "map key -1 at byte 3"},
		{"duplicate nested", []byte{0x81, 0xa1, 'x', 0x91, 0x82, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02}, `map key "a" at byte 8`},
		{"duplicate map16", []byte{0xde, 0x00, 0x02, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02}, `map key "a" at byte 6`},
	}
	for _, tc := range tests {
		err := CheckWith(tc.b, strict)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.msg)
		}
	}
}

func TestCheckWithDistinctKeys(t *testing.T) {
	// A str and an integer, 1 and -1, uint64 max and -1 are different keys.
	for _, b := range [][]byte{
		{0x82, 0xa1, '1', 0xc0, 0x01, 0xc0},
		{0x82, 0x01, 0xc0, 0xff, 0xc0},
		{0x82, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xff, 0xc0},
		{0x82, 0xa1, 'a', 0x81, 0xa1, 'a', 0x01, 0xa1, 'b', 0x81, 0xa1, 'a', 0x01},
	} {
		if err := CheckWith(b, strict); err != nil {
			t.Errorf("% x: %v", b, err)
		}
	}
}

func TestCheckWithManyKeys(t *testing.T) {
	m := map[string]int{}
	for i := 0; i < 1000; i++ {
		m[fmt.Sprint("k", i)] = i
	}
	b, err := msgpack.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckWith(b, strict); err != nil {
		t.Fatal(err)
	}
	// Append a repeat of the first key: map16 count + 1.
	if b[0] != 0xde {
		t.Fatalf("code 0x%x", b[0])
	}
	b[2]++
	b = append(b, 0xa2, 'k', '7', 0x00)
	if err := CheckWith(b, strict); err == nil || !strings.Contains(err.Error(), `"k7"`) {
		t.Fatalf("err = %v", err)
	}
}

// Whatever CheckWith accepts, Check accepts, and the decoder decodes.
func FuzzCheckWith(f *testing.F) {
	f.Add([]byte("\x82\xa6script\xb5def main(x): return x\xa5input\x92\x01\xa1a"))
	f.Add([]byte{0x82, 0x01, 0xc0, 0xcd, 0x00, 0x01, 0xc0})
	f.Add([]byte{0x91, 0xd4, 0x05, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		if CheckWith(b, Options{MaxDepth: 64, UTF8: true, NoExt: true, StrOrIntKeys: true, UniqueKeys: true}) != nil {
			return
		}
		if err := Check(b, 64); err != nil {
			t.Fatalf("Check refuses what CheckWith accepts: %v", err)
		}
		// Maps with integer keys decode as map[any]any.
		dec := msgpack.NewDecoder(bytes.NewReader(b))
		dec.SetMapDecoder(func(d *msgpack.Decoder) (any, error) { return d.DecodeUntypedMap() })
		if _, err := dec.DecodeInterface(); err != nil {
			t.Fatalf("decoder refuses what CheckWith accepts: %v", err)
		}
	})
}

func TestMaxLen(t *testing.T) {
	opts := Options{MaxDepth: 8, MaxLen: 3}
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"array of 3", []byte{0x93, 0xc0, 0xc0, 0xc0}, true},
		{"array of 4", []byte{0x94, 0xc0, 0xc0, 0xc0, 0xc0}, false},
		{"map of 3 pairs", []byte{0x83, 1, 0xc0, 2, 0xc0, 3, 0xc0}, true},
		{"map of 4 pairs", []byte{0x84, 1, 0xc0, 2, 0xc0, 3, 0xc0, 4, 0xc0}, false},
		{"array32 declaring 2^32-1", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}, false},
		{"nested array over the cap", []byte{0x91, 0x94, 0xc0, 0xc0, 0xc0, 0xc0}, false},
	} {
		err := CheckWith(tc.b, opts)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestManyKeysCostLittle: checking a map of a million one-byte keys costs
// a few times the body, not a Go map of strings (over a hundred MB for
// this body), and finds an integer key repeated in another encoding.
func TestManyKeysCostLittle(t *testing.T) {
	const n = 1 << 20
	b := []byte{0xdf, 0, 0x10, 0, 0} // map32 of n pairs
	for i := 0; i < n; i++ {
		b = append(b, 0xce, byte(i>>24), byte(i>>16), byte(i>>8), byte(i), 0xc0) // uint32 key, nil value
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := CheckWith(b, strict); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 3*uint64(len(b)) {
		t.Errorf("checking %d bytes allocated %d", len(b), alloc)
	}
	// The last key, 1048575, again as a uint32 would be caught by the
	// encoder; as an int64 it is the same key in another encoding.
	b[4]++ // n+1 pairs
	b = append(b, 0xd3, 0, 0, 0, 0, 0, 0x0f, 0xff, 0xff, 0xc0)
	if err := CheckWith(b, strict); err == nil || !strings.Contains(err.Error(), "1048575") {
		t.Fatalf("a repeated key in another encoding: err = %v", err)
	}
}
