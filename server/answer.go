package server

import (
	"encoding/base64"
	"math"
	"strconv"
	"unicode/utf8"
)

// encoder writes one answer, JSON or msgpack, by hand rather than through
// encoding/json's or msgpack's reflection, so that an answer's size is
// known before any of it is allocated and nothing but the answer's own
// buffer ever holds it: the same function builds the answer twice, first
// measuring (measure: only n counts), then writing into a buffer of
// exactly that capacity (encoding/json would build its own copy first,
// and keep it in a pool). An answer is at most MaxAnswerBytes: writing
// stops, and over is set, at the buffer's capacity.
//
// Strings are written as valid UTF-8: a byte that is not part of valid
// UTF-8 becomes U+FFFD, one per byte, in both formats (see validUTF8).
// JSON escapes what encoding/json escapes with SetEscapeHTML(false):
// '"', '\\', control characters (\n, \r, \t, \b, \f by name, the others as
// \u00XX), U+2028 and U+2029.
type encoder struct {
	msgpack bool
	measure bool
	// n is the bytes measured, or written so far.
	n int
	// b is the answer (not measuring); never grown past its capacity.
	b    []byte
	over bool
	// counts holds, for each JSON container open, how many keys or
	// elements it has so far: the next needs a comma when it is not 0.
	counts []int
}

// put adds p to the answer.
func (e *encoder) put(p ...byte) {
	e.n += len(p)
	if e.measure || e.over {
		return
	}
	if len(e.b)+len(p) > cap(e.b) {
		e.over = true
		return
	}
	e.b = append(e.b, p...)
}

func (e *encoder) putString(s string) {
	e.n += len(s)
	if e.measure || e.over {
		return
	}
	if len(e.b)+len(s) > cap(e.b) {
		e.over = true
		return
	}
	e.b = append(e.b, s...)
}

// sep writes the comma before a JSON key or array element.
func (e *encoder) sep() {
	if e.msgpack || len(e.counts) == 0 {
		return
	}
	top := len(e.counts) - 1
	if e.counts[top] > 0 {
		e.put(',')
	}
	e.counts[top]++
}

func (e *encoder) mapStart(n int) {
	if e.msgpack {
		e.put(appendMapLen(nil, uint32(n))...)
		return
	}
	e.put('{')
	e.counts = append(e.counts, 0)
}

func (e *encoder) mapEnd() { e.end('}') }

func (e *encoder) arrayStart(n int) {
	if e.msgpack {
		e.put(appendArrayLen(nil, uint32(n))...)
		return
	}
	e.put('[')
	e.counts = append(e.counts, 0)
}

func (e *encoder) arrayEnd() { e.end(']') }

// end closes a JSON container (msgpack's have their count up front).
func (e *encoder) end(c byte) {
	if !e.msgpack {
		e.put(c)
		e.counts = e.counts[:len(e.counts)-1]
	}
}

// elem starts an array element.
func (e *encoder) elem() { e.sep() }

// key starts a map entry; keys are the answer's own, plain ASCII.
func (e *encoder) key(k string) {
	e.sep()
	if e.msgpack {
		e.put(appendStrHeader(nil, len(k))...)
		e.putString(k)
		return
	}
	e.put('"')
	e.putString(k)
	e.put('"', ':')
}

// str writes s, made valid UTF-8.
func (e *encoder) str(s []byte) {
	if e.msgpack {
		n := len(s)
		valid := utf8.Valid(s)
		if !valid {
			n = encodedLen(s, true)
		}
		var header [5]byte
		e.put(appendStrHeader(header[:0], n)...)
		e.putValid(s, valid)
		return
	}
	if e.measure {
		e.n += 2 + encodedLen(s, false)
		return
	}
	e.put('"')
	e.putJSONEscaped(s)
	e.put('"')
}

// text writes a short string of the answer's own (a message, a name).
func (e *encoder) text(s string) { e.str([]byte(s)) }

// putValid writes s with each byte that is not valid UTF-8 replaced.
func (e *encoder) putValid(s []byte, valid bool) {
	if valid {
		e.put(s...)
		return
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			e.putString("\uFFFD")
		} else {
			e.put(s[i : i+size]...)
		}
		i += size
	}
}

const hexDigits = "0123456789abcdef"

// putJSONEscaped writes s escaped for a JSON string, made valid UTF-8.
// Runs of bytes that need nothing are written at once.
func (e *encoder) putJSONEscaped(s []byte) {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			e.put(s[start:i]...)
			switch c {
			case '"', '\\':
				e.put('\\', c)
			case '\n':
				e.put('\\', 'n')
			case '\r':
				e.put('\\', 'r')
			case '\t':
				e.put('\\', 't')
			case '\b':
				e.put('\\', 'b')
			case '\f':
				e.put('\\', 'f')
			default:
				e.put('\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			e.put(s[start:i]...)
			e.putString("\uFFFD")
		case r == '\u2028' || r == '\u2029':
			e.put(s[start:i]...)
			e.put('\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	e.put(s[start:]...)
}

// bin writes binary content: base64 in JSON, bin in msgpack.
func (e *encoder) bin(p []byte) {
	if e.msgpack {
		n := len(p)
		switch {
		case n <= math.MaxUint8:
			e.put(0xc4, byte(n))
		case n <= math.MaxUint16:
			e.put(0xc5, byte(n>>8), byte(n))
		default:
			e.put(0xc6, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
		}
		e.put(p...)
		return
	}
	size := base64.StdEncoding.EncodedLen(len(p))
	e.put('"')
	e.n += size
	if !e.measure && !e.over {
		if len(e.b)+size > cap(e.b) {
			e.over = true
		} else {
			e.b = base64.StdEncoding.AppendEncode(e.b, p)
		}
	}
	e.put('"')
}

// result writes a result as the sandbox encoded it for this answer's
// format (runner.ResultJSON or runner.ResultMsgpack), checked by the
// runner: its bytes go in as they are, so its measure is exact.
func (e *encoder) result(raw []byte) { e.put(raw...) }

func (e *encoder) float(f float64) {
	if e.msgpack {
		bits := math.Float64bits(f)
		e.put(0xcb, byte(bits>>56), byte(bits>>48), byte(bits>>40), byte(bits>>32),
			byte(bits>>24), byte(bits>>16), byte(bits>>8), byte(bits))
		return
	}
	var buf [32]byte
	e.put(strconv.AppendFloat(buf[:0], f, 'f', -1, 64)...)
}

func (e *encoder) int(i int64) {
	var buf [24]byte
	if e.msgpack {
		e.put(appendInt(buf[:0], i)...)
		return
	}
	e.put(strconv.AppendInt(buf[:0], i, 10)...)
}

func (e *encoder) boolean(b bool) {
	switch {
	case e.msgpack && b:
		e.put(0xc3)
	case e.msgpack:
		e.put(0xc2)
	case b:
		e.putString("true")
	default:
		e.putString("false")
	}
}
