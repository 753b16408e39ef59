// Package strictjson reads untrusted JSON text against RFC 8259 with no
// leniency, in one pass: a Reader gives the text's tokens one at a time,
// or a whole value in compact form, and Compact re-encodes a whole text.
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

// Options are the rules of a Reader and of Compact beyond RFC 8259.
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
	var r Reader
	r.Reset(src, opts)
	out, err := r.AppendValue(dst)
	if err == nil {
		err = r.Finish()
	}
	if err != nil {
		return dst, err
	}
	return out, nil
}

// Kind is what a token is.
type Kind uint8

const (
	// Invalid is the Kind returned with an error.
	Invalid Kind = iota
	// End is the end of the text, after the top-level value.
	End
	ObjectStart
	ObjectEnd
	ArrayStart
	ArrayEnd
	// Key is an object's key: a string, and the ':' after it.
	Key
	String
	Number
	True
	False
	Null
)

var kindNames = [...]string{"invalid", "end of input", "object", "end of object", "array", "end of array",
	"key", "string", "number", "true", "false", "null"}

// String names the kind as a message would: "string", "object".
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Token is one token of the text.
type Token struct {
	Kind Kind
	// Raw is the token as written in src (a slice of it): a string or a
	// key with its quotes and escapes, a number, a literal, or the one
	// byte of a bracket or a brace. Empty for End.
	Raw []byte
	// Offset is where Raw starts in src.
	Offset int
	// escaped says a String or Key holds an escape.
	escaped bool
}

// AppendText appends the text of a String or Key token, escapes decoded,
// to dst.
func (t Token) AppendText(dst []byte) []byte {
	if !t.escaped {
		return append(dst, t.Raw[1:len(t.Raw)-1]...)
	}
	s := scanner{src: t.Raw}
	return s.keyBytes(dst, 0)
}

// Text is the text of a String or Key token, escapes decoded.
func (t Token) Text() string {
	if !t.escaped {
		return string(t.Raw[1 : len(t.Raw)-1])
	}
	return string(t.AppendText(make([]byte, 0, len(t.Raw))))
}

// Reader reads a JSON text token by token, checking each as it goes. Its
// first error ends the reading: every later call returns it. A text is
// known to be valid only once Finish has returned nil.
type Reader struct {
	s scanner
}

// NewReader returns a Reader of src with the rules of opts.
func NewReader(src []byte, opts Options) *Reader {
	r := new(Reader)
	r.Reset(src, opts)
	return r
}

// Reset makes r a Reader of src with the rules of opts, as NewReader
// does, keeping the buffers it grew for an earlier text.
func (r *Reader) Reset(src []byte, opts Options) {
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = DefaultMaxDepth
	}
	r.s = scanner{src: src, opts: opts,
		stack: r.s.stack[:0], keys: r.s.keys[:0], unescaped: r.s.unescaped[:0], other: r.s.other[:0]}
	if opts.RejectDuplicateKeys {
		if uint64(len(src)) >= math.MaxUint32 {
			// A key's offset is 32 bits (keyRef).
			r.s.err = &SyntaxError{Offset: math.MaxUint32 - 1,
				Msg: fmt.Sprintf("input of %d bytes is over the 4 GiB that the duplicate key check handles", len(src))}
			return
		}
		r.s.seed = maphash.MakeSeed()
	}
	r.s.skipSpace()
}

// Next reads the next token: End after the top-level value (and on every
// call after that). Errors are *SyntaxError.
func (r *Reader) Next() (Token, error) {
	s := &r.s
	if err := s.next(); err != nil {
		return Token{}, err
	}
	return Token{Kind: s.kind, Raw: s.src[s.start:s.end], Offset: s.start, escaped: s.escaped}, nil
}

// InputOffset is the offset in src of the end of the last token read (or
// of the whitespace after it): what is left to read is src[InputOffset():].
func (r *Reader) InputOffset() int { return r.s.pos }

// More reports whether the innermost open array or object has another
// element (or key) before its end; false when none is open, or after an
// error.
func (r *Reader) More() bool {
	s := &r.s
	if s.err != nil || len(s.stack) == 0 {
		return false
	}
	if s.state != afterValue && s.state != wantFirst {
		return true
	}
	s.skipSpace()
	if s.pos >= len(s.src) {
		return true // the next read tells the end of input
	}
	c := s.src[s.pos]
	if s.stack[len(s.stack)-1].object {
		return c != '}'
	}
	return c != ']'
}

// AppendValue reads the next value whole, checking it, and appends its
// compact form to dst. Call it where a value comes next: first, after a
// Key, or in an array when More says so. On error, what it returns holds
// dst and part of the value.
func (r *Reader) AppendValue(dst []byte) ([]byte, error) {
	s := &r.s
	s.dst = dst
	err := s.value(true)
	out := s.dst
	s.dst = nil
	return out, err
}

// SkipValue reads the next value whole, checking it, as AppendValue does
// with nothing to append.
func (r *Reader) SkipValue() error {
	return r.s.value(false)
}

// Finish reads the rest of the text, checking it: the open arrays and
// objects to their ends, then nothing but whitespace. It returns the first
// error of the text, whether read before or now.
func (r *Reader) Finish() error {
	s := &r.s
	for {
		if err := s.next(); err != nil {
			return err
		}
		if s.kind == End {
			return nil
		}
	}
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

// state is what the scanner reads next.
type state uint8

const (
	// wantValue: a value, at s.pos (the start, or after ':' or an
	// array's ',').
	wantValue state = iota
	// wantFirst: after '[' or '{', its first element (or key) or its end.
	wantFirst
	// afterValue: ',', the end of the open array or object, or the end
	// of the text.
	afterValue
	// ended: End was read.
	ended
)

type scanner struct {
	src []byte
	// dst receives the compact form while record is set: runs of src
	// between whitespace outside strings.
	dst    []byte
	record bool
	opts   Options
	pos    int
	// copied is where the bytes not yet copied to dst start; whitespace
	// outside strings ends a run.
	copied int
	state  state
	stack  []frame
	// err is the first error; once set, the scanner reads no further.
	err error
	// The last token read: its kind, its bytes src[start:end], whether
	// (a string or key) it holds an escape.
	kind       Kind
	start, end int
	escaped    bool
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

// skipSpace skips whitespace, leaving it out of the compact form.
func (s *scanner) skipSpace() {
	if s.pos >= len(s.src) || !isSpace(s.src[s.pos]) {
		return
	}
	if s.record {
		s.dst = append(s.dst, s.src[s.copied:s.pos]...)
	}
	s.pos++
	for s.pos < len(s.src) && isSpace(s.src[s.pos]) {
		s.pos++
	}
	s.copied = s.pos
}

// value reads one value whole, with record set appending its compact
// form to s.dst. Nesting costs no recursion: the value's arrays and
// objects are the frames above base.
func (s *scanner) value(record bool) error {
	base := len(s.stack)
	if err := s.next(); err != nil {
		return err
	}
	switch s.kind {
	case ObjectEnd, ArrayEnd, Key, End:
		err := s.fail(s.start, "expected a value, found %s", s.kind)
		s.err = err
		return err
	}
	if record {
		// The whitespace after a token is skipped when the next one is
		// read: the first token is src[start:pos], the run to copy.
		s.copied, s.record = s.start, true
		defer func() {
			s.dst = append(s.dst, s.src[s.copied:s.pos]...)
			s.record = false
		}()
	}
	for len(s.stack) > base {
		if err := s.next(); err != nil {
			return err
		}
	}
	return nil
}

// next reads one token into s.kind, s.start and s.end.
func (s *scanner) next() error {
	if s.err != nil {
		return s.err
	}
	if err := s.step(); err != nil {
		s.err = err
		s.kind = Invalid
		return err
	}
	return nil
}

func (s *scanner) step() error {
	switch s.state {
	case ended:
		s.kind, s.start, s.end = End, s.pos, s.pos
		return nil
	case wantFirst:
		s.skipSpace()
		top := &s.stack[len(s.stack)-1]
		if s.pos < len(s.src) && s.src[s.pos] == closer(top.object) {
			return s.close()
		}
		if top.object {
			return s.key(top)
		}
	case afterValue:
		s.skipSpace()
		if len(s.stack) == 0 {
			if s.pos != len(s.src) {
				return s.fail(s.pos, "unexpected %s after the top-level value", s.describe(s.pos))
			}
			s.state = ended
			s.kind, s.start, s.end = End, s.pos, s.pos
			return nil
		}
		top := &s.stack[len(s.stack)-1]
		if s.pos >= len(s.src) {
			return s.fail(s.pos, "unexpected end of input inside %s", containerName(top.object))
		}
		switch c := s.src[s.pos]; {
		case c == ',':
			s.pos++
			s.skipSpace()
			if top.object {
				return s.key(top)
			}
		case c == closer(top.object):
			return s.close()
		case top.object:
			return s.fail(s.pos, "expected ',' or '}' after object value, found %s", s.describe(s.pos))
		default:
			return s.fail(s.pos, "expected ',' or ']' after array element, found %s", s.describe(s.pos))
		}
	}
	return s.scalarOrOpen()
}

func closer(object bool) byte {
	if object {
		return '}'
	}
	return ']'
}

func containerName(object bool) string {
	if object {
		return "object"
	}
	return "array"
}

// close reads the '}' or ']' at s.pos, closing the innermost array or
// object.
func (s *scanner) close() error {
	s.kind, s.start, s.end = ArrayEnd, s.pos, s.pos+1
	if s.stack[len(s.stack)-1].object {
		s.kind = ObjectEnd
	}
	s.pos++
	s.state = afterValue
	return s.pop()
}

// scalarOrOpen reads the token that starts a value at s.pos: a scalar
// whole, or the '[' or '{' that opens an array or object.
func (s *scanner) scalarOrOpen() error {
	s.start, s.escaped = s.pos, false
	s.state = afterValue
	if s.pos >= len(s.src) {
		return s.fail(s.pos, "unexpected end of input, expected a value")
	}
	var err error
	switch c := s.src[s.pos]; c {
	case '"':
		s.kind = String
		s.escaped, err = s.str(false)
	case '{', '[':
		if len(s.stack) >= s.opts.MaxDepth {
			return s.fail(s.pos, "nesting deeper than %d", s.opts.MaxDepth)
		}
		s.pos++
		s.kind = ArrayStart
		if c == '{' {
			s.kind = ObjectStart
		}
		s.stack = append(s.stack, frame{object: c == '{', keys: len(s.keys)})
		s.state = wantFirst
	case 't':
		s.kind = True
		err = s.literal("true")
	case 'f':
		s.kind = False
		err = s.literal("false")
	case 'n':
		s.kind = Null
		err = s.literal("null")
	case 'N':
		return s.fail(s.pos, "NaN is not JSON")
	case 'I':
		return s.fail(s.pos, "Infinity is not JSON")
	default:
		if c != '-' && (c < '0' || c > '9') {
			return s.fail(s.pos, "unexpected %s, expected a value", s.describe(s.pos))
		}
		s.kind = Number
		err = s.number()
	}
	s.end = s.pos
	return err
}

// key reads an object key at s.pos, the colon after it and the whitespace
// around it, leaving s.pos at the value.
func (s *scanner) key(f *frame) error {
	s.kind, s.start = Key, s.pos
	if s.pos >= len(s.src) {
		return s.fail(s.pos, "unexpected end of input, expected an object key")
	}
	if s.src[s.pos] != '"' {
		return s.fail(s.pos, "unexpected %s, expected an object key (a string)", s.describe(s.pos))
	}
	var err error
	if s.opts.RejectDuplicateKeys {
		at := s.pos
		s.unescaped = s.unescaped[:0]
		if s.escaped, err = s.str(true); err != nil {
			return err
		}
		k := s.src[at+1 : s.pos-1]
		if s.escaped {
			k = s.unescaped
		}
		key := keyRef(uint64(uint32(maphash.Bytes(s.seed, k)))<<32 | uint64(at))
		if err := s.addKey(f, key, k); err != nil {
			return err
		}
	} else if s.escaped, err = s.str(false); err != nil {
		return err
	}
	s.end = s.pos
	s.skipSpace()
	if s.pos >= len(s.src) || s.src[s.pos] != ':' {
		return s.fail(s.pos, "expected ':' after object key, found %s", s.describe(s.pos))
	}
	s.pos++
	s.skipSpace()
	s.state = wantValue
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
