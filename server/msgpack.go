package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
)

// jsonAsMsgpack is a result's JSON text that encodes itself as the
// equivalent msgpack value, converted as it is written (jsonToMsgpack):
// no tree of Go values is built, so a result of millions of elements
// costs the server its msgpack bytes, not hundreds of bytes per element.
type jsonAsMsgpack []byte

var _ msgpack.CustomEncoder = jsonAsMsgpack(nil)

// EncodeMsgpack writes the msgpack value to enc's writer.
func (j jsonAsMsgpack) EncodeMsgpack(enc *msgpack.Encoder) error {
	return jsonToMsgpack(enc.Writer(), j)
}

// errNotCompactJSON is returned for text that is not compact JSON; the
// runner passes on only strict JSON it compacted itself, so it means a
// bug, never a script's doing.
var errNotCompactJSON = errors.New("not compact JSON")

// jsonToMsgpack writes the msgpack equivalent of src, one compact JSON
// value (as the runner passes results on: strict, no whitespace), to w:
// arrays and objects become arrays and maps, strings str, true, false and
// null themselves, and numbers by these rules:
//
//   - an integer (no fraction, no exponent) is a msgpack integer in its
//     smallest form when it fits int64 or uint64 (2**64-1 included);
//   - any other number is a float64, the nearest one, as a JSON reader
//     reads it;
//   - a number msgpack cannot carry without changing it (an integer
//     outside int64 and uint64, such as Python's 10**400, or a number
//     beyond float64's range, which would become ±Inf) is a str holding
//     the number's JSON text. msgpack has no bigger number, and a msgpack
//     client (msgpack-python among them) cannot read one; a float would
//     silently round or overflow to Inf, and an error would lose the whole
//     answer, stdout included, that a JSON client gets. Exact text is the
//     rule the result mapping already follows for Decimal.
//
// A first pass counts each array's elements and each object's pairs, as
// msgpack puts the count first: four bytes per array or object.
func jsonToMsgpack(w io.Writer, src []byte) error {
	if len(src) == 0 {
		return errNotCompactJSON
	}
	counts, err := containerCounts(src)
	if err != nil {
		return err
	}
	c := converter{w: w, src: src, counts: counts, out: make([]byte, 0, flushAt+64)}
	if err := c.run(); err != nil {
		return err
	}
	return c.flush()
}

// flushAt is how many converted bytes are gathered before they are written.
const flushAt = 32 << 10

// containerCounts returns the element count of each array and the pair
// count of each object in src, in the order they open. In compact JSON a
// container's count is its commas at its own level plus one, unless it is
// empty.
func containerCounts(src []byte) ([]uint32, error) {
	var counts []uint32
	var open []int // indices in counts of the containers open at i
	for i := 0; i < len(src); i++ {
		switch src[i] {
		case '"':
			end, err := stringEnd(src, i)
			if err != nil {
				return nil, err
			}
			i = end - 1
		case '[', '{':
			open = append(open, len(counts))
			counts = append(counts, 0)
		case ',':
			if len(open) == 0 {
				return nil, errNotCompactJSON
			}
			counts[open[len(open)-1]]++
		case ']', '}':
			if len(open) == 0 || i == 0 {
				return nil, errNotCompactJSON
			}
			if prev := src[i-1]; prev != '[' && prev != '{' {
				counts[open[len(open)-1]]++
			}
			open = open[:len(open)-1]
		}
	}
	if len(open) != 0 {
		return nil, errNotCompactJSON
	}
	return counts, nil
}

// stringEnd returns the index just past the JSON string that starts at
// src[i] (a quote).
func stringEnd(src []byte, i int) (int, error) {
	for j := i + 1; j < len(src); j++ {
		switch src[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errNotCompactJSON
}

type converter struct {
	w      io.Writer
	src    []byte
	counts []uint32
	next   int // the index in counts of the next container to open
	out    []byte
}

func (c *converter) flush() error {
	if len(c.out) > 0 {
		if _, err := c.w.Write(c.out); err != nil {
			return fmt.Errorf("cannot write msgpack: %w", err)
		}
		c.out = c.out[:0]
	}
	return nil
}

// run converts src token by token: src is valid JSON, so the separators
// need no checking and nesting needs no stack.
func (c *converter) run() error {
	src := c.src
	for i := 0; i < len(src); {
		if len(c.out) >= flushAt {
			if err := c.flush(); err != nil {
				return err
			}
		}
		switch ch := src[i]; {
		case ch == ',' || ch == ':' || ch == ']' || ch == '}':
			i++
		case ch == '[' || ch == '{':
			if c.next >= len(c.counts) {
				return errNotCompactJSON
			}
			n := c.counts[c.next]
			c.next++
			if ch == '[' {
				c.out = appendArrayLen(c.out, n)
			} else {
				c.out = appendMapLen(c.out, n)
			}
			i++
		case ch == '"':
			end, err := stringEnd(src, i)
			if err != nil {
				return err
			}
			if err := c.str(src[i+1 : end-1]); err != nil {
				return err
			}
			i = end
		case ch == 't' && bytes.HasPrefix(src[i:], []byte("true")):
			c.out = append(c.out, 0xc3)
			i += 4
		case ch == 'f' && bytes.HasPrefix(src[i:], []byte("false")):
			c.out = append(c.out, 0xc2)
			i += 5
		case ch == 'n' && bytes.HasPrefix(src[i:], []byte("null")):
			c.out = append(c.out, 0xc0)
			i += 4
		case ch == '-' || ch >= '0' && ch <= '9':
			end := i + 1
			for end < len(src) && isNumberByte(src[end]) {
				end++
			}
			if err := c.number(src[i:end]); err != nil {
				return err
			}
			i = end
		default:
			return errNotCompactJSON
		}
	}
	return nil
}

func isNumberByte(b byte) bool {
	return b >= '0' && b <= '9' || b == '.' || b == 'e' || b == 'E' || b == '+' || b == '-'
}

// number writes one JSON number by jsonToMsgpack's rules.
func (c *converter) number(text []byte) error {
	if !bytes.ContainsAny(text, ".eE") {
		if n, err := strconv.ParseInt(string(text), 10, 64); err == nil {
			c.out = appendInt(c.out, n)
			return nil
		}
		if text[0] != '-' {
			if n, err := strconv.ParseUint(string(text), 10, 64); err == nil {
				c.out = appendUint(c.out, n)
				return nil
			}
		}
		c.out = appendStrHeader(c.out, len(text))
		c.out = append(c.out, text...)
		return nil
	}
	f, err := strconv.ParseFloat(string(text), 64)
	if math.IsInf(f, 0) {
		// Beyond float64's range: the text, not ±Inf.
		c.out = appendStrHeader(c.out, len(text))
		c.out = append(c.out, text...)
		return nil
	}
	if err != nil {
		var numErr *strconv.NumError
		if !errors.As(err, &numErr) || !errors.Is(numErr.Err, strconv.ErrRange) {
			return errNotCompactJSON
		}
		// Underflow: the nearest float64 (zero or subnormal), as a JSON
		// reader reads it.
	}
	c.out = append(c.out, 0xcb)
	c.out = appendUint64(c.out, math.Float64bits(f))
	return nil
}

// str writes the JSON string whose text between the quotes is raw; the
// runner checked it is UTF-8 with no lone surrogate escape.
func (c *converter) str(raw []byte) error {
	if bytes.IndexByte(raw, '\\') < 0 {
		c.out = appendStrHeader(c.out, len(raw))
		if len(raw) < flushAt {
			c.out = append(c.out, raw...)
			return nil
		}
		// A long string goes to the writer as it is, not through out.
		if err := c.flush(); err != nil {
			return err
		}
		if _, err := c.w.Write(raw); err != nil {
			return fmt.Errorf("cannot write msgpack: %w", err)
		}
		return nil
	}
	s, err := unescapeJSON(raw)
	if err != nil {
		return err
	}
	c.out = appendStrHeader(c.out, len(s))
	c.out = append(c.out, s...)
	return nil
}

// unescapeJSON returns the text of a JSON string's escaped contents.
func unescapeJSON(raw []byte) ([]byte, error) {
	s := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			s = append(s, raw[i])
			continue
		}
		if i+1 >= len(raw) {
			return nil, errNotCompactJSON
		}
		i++
		switch raw[i] {
		case '"', '\\', '/':
			s = append(s, raw[i])
		case 'b':
			s = append(s, '\b')
		case 'f':
			s = append(s, '\f')
		case 'n':
			s = append(s, '\n')
		case 'r':
			s = append(s, '\r')
		case 't':
			s = append(s, '\t')
		case 'u':
			r, ok := hex4(raw[i+1:])
			if !ok {
				return nil, errNotCompactJSON
			}
			i += 4
			if utf16.IsSurrogate(r) {
				// The runner refuses lone surrogates; a pair is one rune.
				r2, ok := rune(0), false
				if i+6 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
					r2, ok = hex4(raw[i+3:])
				}
				if r = utf16.DecodeRune(r, r2); !ok || r == utf8.RuneError {
					return nil, errNotCompactJSON
				}
				i += 6
			}
			s = utf8.AppendRune(s, r)
		default:
			return nil, errNotCompactJSON
		}
	}
	return s, nil
}

// hex4 reads four hex digits.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[:4]), 16, 32)
	return rune(n), err == nil
}

// The append functions write msgpack headers and numbers in their
// smallest form, into the converter's buffer. msgpack.Encoder has the same
// forms, but writes each value to its writer on its own, and takes a
// string only as a Go string: one conversion, so one allocation, per JSON
// string of a result that may hold millions.

func appendArrayLen(b []byte, n uint32) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xdc, byte(n>>8), byte(n))
	default:
		return append(b, 0xdd, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

func appendMapLen(b []byte, n uint32) []byte {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xde, byte(n>>8), byte(n))
	default:
		return append(b, 0xdf, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

func appendStrHeader(b []byte, n int) []byte {
	switch {
	case n < 32:
		return append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		return append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xda, byte(n>>8), byte(n))
	default:
		return append(b, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

func appendUint(b []byte, n uint64) []byte {
	switch {
	case n <= math.MaxInt8:
		return append(b, byte(n))
	case n <= math.MaxUint8:
		return append(b, 0xcc, byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xcd, byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		return append(b, 0xce, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	default:
		return appendUint64(append(b, 0xcf), n)
	}
}

func appendInt(b []byte, n int64) []byte {
	switch {
	case n >= 0:
		return appendUint(b, uint64(n))
	case n >= -32:
		return append(b, byte(n)) // negative fixint
	case n >= math.MinInt8:
		return append(b, 0xd0, byte(n))
	case n >= math.MinInt16:
		return append(b, 0xd1, byte(n>>8), byte(n))
	case n >= math.MinInt32:
		return append(b, 0xd2, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	default:
		return appendUint64(append(b, 0xd3), uint64(n))
	}
}

func appendUint64(b []byte, n uint64) []byte {
	return append(b, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}
