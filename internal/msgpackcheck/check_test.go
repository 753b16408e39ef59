package msgpackcheck

import (
	"errors"
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
