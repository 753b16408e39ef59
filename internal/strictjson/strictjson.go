// Package strictjson validates untrusted JSON text against RFC 8259 with
// no leniency and re-encodes it in compact form, in one pass.
//
// Beyond what encoding/json checks, it refuses invalid UTF-8 anywhere,
// escapes of lone UTF-16 surrogates, nesting past a depth and, on request,
// objects that repeat a key. The compact form keeps every string exactly as
// written (escapes included, nothing HTML-escaped); only whitespace outside
// strings is dropped.
package strictjson

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// DefaultMaxDepth is the nesting limit when Options.MaxDepth is not set.
const DefaultMaxDepth = 1000

// Options are the rules of Compact beyond RFC 8259.
type Options struct {
	// MaxDepth is the deepest nesting of arrays and objects allowed; a
	// top-level array has depth 1. Zero or less: DefaultMaxDepth.
	MaxDepth int
	// RejectDuplicateKeys refuses an object with the same key twice. Keys
	// are compared after unescaping, so "a" and "\u0061" are the same key.
	// The error's offset is that of the first key in the text that repeats
	// an earlier one of its object. An object's first linearKeys keys are
	// compared as they come; a bigger object's other keys are checked when
	// it closes, so an error further in it (in a later value, or a repeat
	// in a nested object) is the one reported. The check costs 8 bytes a
	// key of the open objects and refuses src of 4 GiB or more.
	RejectDuplicateKeys bool
}

// SyntaxError says why src was refused and where.
type SyntaxError struct {
	// Offset is the byte offset in src of the offending byte (len(src) when
	// the text ended too early).
	Offset int64
	// Msg says what is wrong.
	Msg string
}

func (e *SyntaxError) Error() string {
	return e.Msg + " at byte " + strconv.FormatInt(e.Offset, 10)
}

// Compact checks that src is exactly one JSON value, optionally surrounded
// by whitespace, and appends its compact form to dst. On error it returns
// dst unchanged and a *SyntaxError.
func Compact(dst, src []byte, opts Options) ([]byte, error) {
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = DefaultMaxDepth
	}
	if opts.RejectDuplicateKeys && uint64(len(src)) >= math.MaxUint32 {
		// A key's offset is 32 bits (keyRef).
		return dst, &SyntaxError{Offset: math.MaxUint32 - 1,
			Msg: fmt.Sprintf("input of %d bytes is over the 4 GiB that the duplicate key check handles", len(src))}
	}
	s := scanner{src: src, dst: dst, opts: opts}
	if opts.RejectDuplicateKeys {
		s.seed = maphash.MakeSeed()
	}
	if err := s.run(); err != nil {
		return dst, err
	}
	return s.dst, nil
}

// frame is one open array or object.
type frame struct {
	object bool
	// keys is this object's first key in scanner.keys.
	keys int
}

// linearKeys is how many keys of one object are compared one by one as
// they come. The keys of a bigger object are sorted when it closes
// (sortedUnique): no copy of a key, no map (a Go map of strings cost a
// hundred bytes a key, eleven times a body of short keys).
const linearKeys = 16

type scanner struct {
	src, dst []byte
	opts     Options
	pos      int
	// copied is where the bytes not yet copied to dst start; whitespace
	// outside strings ends a run.
	copied int
	stack  []frame
	// keys are the keys of the open objects (only with
	// RejectDuplicateKeys).
	keys []keyRef
	// seed is the keys' hash seed, new for each text so that no text
	// can choose keys whose hashes collide.
	seed maphash.Seed
	// unescaped and other hold the unescaped form of a key or two while
	// they are hashed or compared; reused, never kept.
	unescaped, other []byte
}

// keyRef is an object key: a hash of its unescaped form in the high 32
// bits, the offset of its opening quote in src in the low 32. Sorted as
// numbers, a big object's keys come in runs of equal hash, each run in
// the order of the text; only keys of equal hash are read again (reading
// keys scattered over src took most of the time of a sort by their
// bytes). The hash is 32 bits: keys that collide cost a comparison, not
// a wrong answer.
type keyRef uint64

func (k keyRef) hash() uint32 { return uint32(k >> 32) }
func (k keyRef) at() int      { return int(uint32(k)) }

func (s *scanner) fail(offset int, format string, args ...any) error {
	return &SyntaxError{Offset: int64(offset), Msg: fmt.Sprintf(format, args...)}
}

// describe names the byte at pos for an error message.
func (s *scanner) describe(pos int) string {
	if pos >= len(s.src) {
		return "end of input"
	}
	c := s.src[pos]
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("character %q", c)
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// isSpace is the whitespace of RFC 8259.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// skipSpace skips whitespace and leaves it out of the output.
func (s *scanner) skipSpace() {
	if s.pos >= len(s.src) || !isSpace(s.src[s.pos]) {
		return
	}
	s.dst = append(s.dst, s.src[s.copied:s.pos]...)
	s.pos++
	for s.pos < len(s.src) && isSpace(s.src[s.pos]) {
		s.pos++
	}
	s.copied = s.pos
}

func (s *scanner) run() error {
	s.skipSpace()
	for {
		// A value starts at s.pos.
		opened, err := s.value()
		if err != nil {
			return err
		}
		if opened {
			continue
		}
		// After a value: close containers or move to the next element.
		for {
			s.skipSpace()
			if len(s.stack) == 0 {
				if s.pos != len(s.src) {
					return s.fail(s.pos, "unexpected %s after the top-level value", s.describe(s.pos))
				}
				s.dst = append(s.dst, s.src[s.copied:s.pos]...)
				return nil
			}
			top := &s.stack[len(s.stack)-1]
			if s.pos >= len(s.src) {
				return s.fail(s.pos, "unexpected end of input inside %s", containerName(top.object))
			}
			c := s.src[s.pos]
			if c == ',' {
				s.pos++
				s.skipSpace()
				if top.object {
					if err := s.key(top); err != nil {
						return err
					}
				}
				break
			}
			if top.object && c == '}' || !top.object && c == ']' {
				s.pos++
				if err := s.pop(); err != nil {
					return err
				}
				continue
			}
			if top.object {
				return s.fail(s.pos, "expected ',' or '}' after object value, found %s", s.describe(s.pos))
			}
			return s.fail(s.pos, "expected ',' or ']' after array element, found %s", s.describe(s.pos))
		}
	}
}

func containerName(object bool) string {
	if object {
		return "object"
	}
	return "array"
}

// value scans one value at s.pos. An array or object is opened (and, when
// empty, closed); opened says a non-empty one was, with s.pos at its first
// value, which run's loop scans next: nesting costs no recursion.
func (s *scanner) value() (opened bool, err error) {
	if s.pos >= len(s.src) {
		return false, s.fail(s.pos, "unexpected end of input, expected a value")
	}
	switch c := s.src[s.pos]; c {
	case '"':
		_, err := s.str(false)
		return false, err
	case '{', '[':
		if len(s.stack) >= s.opts.MaxDepth {
			return false, s.fail(s.pos, "nesting deeper than %d", s.opts.MaxDepth)
		}
		s.pos++
		s.stack = append(s.stack, frame{object: c == '{', keys: len(s.keys)})
		s.skipSpace()
		end := byte(']')
		if c == '{' {
			end = '}'
		}
		if s.pos < len(s.src) && s.src[s.pos] == end {
			s.pos++
			return false, s.pop()
		}
		if c == '{' {
			return true, s.key(&s.stack[len(s.stack)-1])
		}
		return true, nil
	case 't':
		return false, s.literal("true")
	case 'f':
		return false, s.literal("false")
	case 'n':
		return false, s.literal("null")
	case 'N':
		return false, s.fail(s.pos, "NaN is not JSON")
	case 'I':
		return false, s.fail(s.pos, "Infinity is not JSON")
	default:
		if c == '-' || c >= '0' && c <= '9' {
			return false, s.number()
		}
		return false, s.fail(s.pos, "unexpected %s, expected a value", s.describe(s.pos))
	}
}

// key scans an object key, the colon after it and the whitespace around
// it, leaving s.pos at the value.
func (s *scanner) key(f *frame) error {
	if s.pos >= len(s.src) {
		return s.fail(s.pos, "unexpected end of input, expected an object key")
	}
	if s.src[s.pos] != '"' {
		return s.fail(s.pos, "unexpected %s, expected an object key (a string)", s.describe(s.pos))
	}
	if s.opts.RejectDuplicateKeys {
		at := s.pos
		s.unescaped = s.unescaped[:0]
		escaped, err := s.str(true)
		if err != nil {
			return err
		}
		k := s.src[at+1 : s.pos-1]
		if escaped {
			k = s.unescaped
		}
		key := keyRef(uint64(uint32(maphash.Bytes(s.seed, k)))<<32 | uint64(at))
		if err := s.addKey(f, key, k); err != nil {
			return err
		}
	} else if _, err := s.str(false); err != nil {
		return err
	}
	s.skipSpace()
	if s.pos >= len(s.src) || s.src[s.pos] != ':' {
		return s.fail(s.pos, "expected ':' after object key, found %s", s.describe(s.pos))
	}
	s.pos++
	s.skipSpace()
	return nil
}

// keyBytes appends the unescaped form of the key at (checked) to buf.
func (s *scanner) keyBytes(buf []byte, at int) []byte {
	i := at + 1
	for {
		n := bytes.IndexAny(s.src[i:], "\"\\")
		buf = append(buf, s.src[i:i+n]...)
		i += n
		if s.src[i] == '"' {
			return buf
		}
		var escape int
		escape, buf, _ = s.escape(i, true, buf)
		i += escape
	}
}

// sameKey says whether the keys at a and b are the same once unescaped.
func (s *scanner) sameKey(a, b keyRef) bool {
	s.unescaped = s.keyBytes(s.unescaped[:0], a.at())
	s.other = s.keyBytes(s.other[:0], b.at())
	return bytes.Equal(s.unescaped, s.other)
}

// addKey records key, whose unescaped form is k, for the object f. The
// first linearKeys keys of an object are compared with the others as
// they come, so a small object costs no sort; a bigger one is checked
// once, when it closes (pop).
func (s *scanner) addKey(f *frame, key keyRef, k []byte) error {
	if len(s.keys)-f.keys < linearKeys {
		for _, other := range s.keys[f.keys:] {
			if other.hash() != key.hash() {
				continue
			}
			if s.other = s.keyBytes(s.other[:0], other.at()); bytes.Equal(s.other, k) {
				return s.duplicate(key)
			}
		}
	}
	if len(s.keys) == cap(s.keys) {
		// Double, where append adds a quarter to a big slice: the copies
		// left behind come to about the final size, not four times it.
		// No more than the rest of src can hold, at five bytes a key
		// (`,"":0`).
		more := max(cap(s.keys), linearKeys)
		more = min(more, (len(s.src)-s.pos)/5+1)
		s.keys = slices.Grow(s.keys, more)
	}
	s.keys = append(s.keys, key)
	return nil
}

func (s *scanner) duplicate(key keyRef) error {
	s.unescaped = s.keyBytes(s.unescaped[:0], key.at())
	return s.fail(key.at(), "duplicate key %q", s.unescaped)
}

// sortedUnique refuses a big object with a key twice: its keys are sorted
// by hash, then by place, and the keys of each run of equal hash compared.
// Of the keys that repeat an earlier one it reports the first in the
// text, as comparing each key on arrival would.
func (s *scanner) sortedUnique(keys []keyRef) error {
	slices.Sort(keys)
	first := -1
	for lo := 0; lo < len(keys); {
		hi := lo + 1
		for hi < len(keys) && keys[hi].hash() == keys[lo].hash() {
			hi++
		}
		// The first key of the run that repeats an earlier one of it. A
		// run holds one key and its repeats but for a collision of
		// hashes, so this loop seldom goes past its first turn.
	run:
		for i := lo + 1; i < hi; i++ {
			if first >= 0 && keys[i].at() > keys[first].at() {
				break
			}
			for j := lo; j < i; j++ {
				if s.sameKey(keys[j], keys[i]) {
					first = i
					break run
				}
			}
		}
		lo = hi
	}
	if first >= 0 {
		return s.duplicate(keys[first])
	}
	return nil
}

// pop closes the innermost array or object, checking a big object's keys.
func (s *scanner) pop() error {
	f := s.stack[len(s.stack)-1]
	s.stack = s.stack[:len(s.stack)-1]
	if !f.object || !s.opts.RejectDuplicateKeys {
		return nil
	}
	var err error
	if len(s.keys)-f.keys > linearKeys {
		err = s.sortedUnique(s.keys[f.keys:])
	}
	s.keys = s.keys[:f.keys]
	return err
}

func (s *scanner) literal(word string) error {
	end := s.pos + len(word)
	if end > len(s.src) || string(s.src[s.pos:end]) != word {
		// Find the first byte that differs, for the offset.
		i := s.pos
		for i < len(s.src) && i < end && s.src[i] == word[i-s.pos] {
			i++
		}
		return s.fail(i, "unexpected %s in literal %s", s.describe(i), word)
	}
	s.pos = end
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() error {
	src := s.src
	i := s.pos
	if src[i] == '-' {
		i++
		if i < len(src) && src[i] == 'I' {
			return s.fail(s.pos, "-Infinity is not JSON")
		}
	}
	switch {
	case i >= len(src) || !isDigit(src[i]):
		return s.fail(i, "unexpected %s in number, expected a digit", s.describe(i))
	case src[i] == '0':
		i++
		if i < len(src) && isDigit(src[i]) {
			return s.fail(i-1, "number with a leading zero")
		}
		if i < len(src) && (src[i] == 'x' || src[i] == 'X') {
			return s.fail(i-1, "hexadecimal numbers are not JSON")
		}
	default:
		for i < len(src) && isDigit(src[i]) {
			i++
		}
	}
	if i < len(src) && src[i] == '.' {
		i++
		if i >= len(src) || !isDigit(src[i]) {
			return s.fail(i, "unexpected %s after decimal point, expected a digit", s.describe(i))
		}
		for i < len(src) && isDigit(src[i]) {
			i++
		}
	}
	if i < len(src) && (src[i] == 'e' || src[i] == 'E') {
		i++
		if i < len(src) && (src[i] == '+' || src[i] == '-') {
			i++
		}
		if i >= len(src) || !isDigit(src[i]) {
			return s.fail(i, "unexpected %s in exponent, expected a digit", s.describe(i))
		}
		for i < len(src) && isDigit(src[i]) {
			i++
		}
	}
	s.pos = i
	return nil
}

// plain marks the bytes a string may hold as they are: printable ASCII
// other than the quote and the backslash.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const (
	lows  = 0x0101010101010101
	highs = 0x8080808080808080
)

// special reports whether any byte of the 8 in w is below 0x20, at or
// above 0x80, a quote or a backslash.
func special(w uint64) bool {
	q := w ^ ('"' * lows)
	b := w ^ ('\\' * lows)
	return ((w-0x20*lows)|(q-lows)|(b-lows)|w)&highs != 0
}

// str scans a string at s.pos. With decode set (a key to be compared), the
// unescaped bytes of a string with escapes are appended to s.unescaped
// and escaped says so; a string without is hashed where it is in src.
func (s *scanner) str(decode bool) (escaped bool, err error) {
	src := s.src
	start := s.pos
	i := s.pos + 1
	// run is where the bytes not yet copied into s.unescaped start.
	run := i
	for {
		// Eight plain bytes at a time, then one at a time.
		for i+8 <= len(src) && !special(binary.LittleEndian.Uint64(src[i:])) {
			i += 8
		}
		for i < len(src) && plain[src[i]] {
			i++
		}
		if i >= len(src) {
			return false, s.fail(start, "unterminated string")
		}
		c := src[i]
		switch {
		case c == '"':
			if decode && escaped {
				s.unescaped = append(s.unescaped, src[run:i]...)
			}
			s.pos = i + 1
			return escaped, nil
		case c == '\\':
			// Before the first escape, run is the string's start: the
			// string so far is copied.
			if decode {
				s.unescaped = append(s.unescaped, src[run:i]...)
			}
			escaped = true
			var n int
			n, s.unescaped, err = s.escape(i, decode, s.unescaped)
			if err != nil {
				return false, err
			}
			i += n
			run = i
		case c < 0x20:
			return false, s.fail(i, "control character U+%04X in string must be escaped", c)
		default:
			r, size := utf8.DecodeRune(src[i:])
			if r == utf8.RuneError && size <= 1 {
				return false, s.fail(i, "invalid UTF-8 in string")
			}
			i += size
		}
	}
}

// escape checks the escape at i (the backslash) and returns its length.
// With decode set, it appends what it stands for to dst.
func (s *scanner) escape(i int, decode bool, dst []byte) (int, []byte, error) {
	src := s.src
	if i+1 >= len(src) {
		return 0, dst, s.fail(i, "unterminated escape")
	}
	var b byte
	switch src[i+1] {
	case '"', '\\', '/':
		b = src[i+1]
	case 'b':
		b = '\b'
	case 'f':
		b = '\f'
	case 'n':
		b = '\n'
	case 'r':
		b = '\r'
	case 't':
		b = '\t'
	case 'u':
		r, err := s.hex4(i)
		if err != nil {
			return 0, dst, err
		}
		n := 6
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return 0, dst, s.fail(i, `lone low surrogate \u%04X`, r)
		case r >= 0xD800 && r <= 0xDBFF:
			j := i + 6
			if j+1 >= len(src) || src[j] != '\\' || src[j+1] != 'u' {
				return 0, dst, s.fail(i, `high surrogate \u%04X not followed by a low surrogate escape`, r)
			}
			lo, err := s.hex4(j)
			if err != nil {
				return 0, dst, err
			}
			if lo < 0xDC00 || lo > 0xDFFF {
				return 0, dst, s.fail(i, `high surrogate \u%04X not followed by a low surrogate escape`, r)
			}
			r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
			n = 12
		}
		if decode {
			dst = utf8.AppendRune(dst, r)
		}
		return n, dst, nil
	default:
		return 0, dst, s.fail(i, "invalid escape \\%s", printable(src[i+1]))
	}
	if decode {
		dst = append(dst, b)
	}
	return 2, dst, nil
}

func printable(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return string(rune(c))
	}
	return fmt.Sprintf("(byte 0x%02x)", c)
}

// hex4 reads the four hex digits of the \u escape at i.
func (s *scanner) hex4(i int) (rune, error) {
	if i+6 > len(s.src) {
		return 0, s.fail(i, `truncated \u escape`)
	}
	var r rune
	for _, c := range s.src[i+2 : i+6] {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, s.fail(i, `invalid \u escape: %s is not a hex digit`, printable(c))
		}
		r = r<<4 | rune(d)
	}
	return r, nil
}
