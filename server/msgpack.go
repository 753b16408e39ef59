package server

import (
	"bytes"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
)

// validUTF8 returns s with every byte that is not part of valid UTF-8
// replaced by U+FFFD, one replacement per byte: exactly what encoding/json
// writes for such a string, so a JSON and a msgpack answer carry the same
// text. What a script writes to its stdout and stderr is raw bytes; a
// msgpack str must be UTF-8, and a client that checks (msgpack-python with
// raw=False, the default) refuses the whole answer otherwise.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b bytes.Buffer
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// validError is body with its text made valid UTF-8 (see validUTF8).
func validError(body errorBody) errorBody {
	body.Message = validUTF8(body.Message)
	body.Traceback = validUTF8(body.Traceback)
	return body
}

// marshalMsgpack encodes v with integers in their smallest msgpack form
// (a 0 is one byte, not the nine of an int64), as the msgpack spec asks
// of serializers; sizeHint is the expected size of the encoding.
func marshalMsgpack(v any, sizeHint int) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(sizeHint)
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
