// Package msgpackcheck validates the structure of untrusted msgpack bytes
// before they are decoded. The msgpack decoder trusts declared lengths and
// would allocate what a 9-byte body claims (gigabytes for one ext header);
// Check walks the headers without allocating and refuses any length that
// does not fit in the bytes actually present, and nesting past a depth.
// CheckWith adds the rules of a strict request body: UTF-8 strings, no ext
// values, str or integer map keys, no key twice in a map.
package msgpackcheck

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrMalformed wraps every reason Check and CheckWith refuse their input.
var ErrMalformed = errors.New("malformed msgpack")

// Options are the rules of CheckWith.
type Options struct {
	// MaxDepth is the deepest nesting allowed, as Check's maxDepth.
	MaxDepth int
	// UTF8 refuses a str (value or key) whose bytes are not UTF-8.
	UTF8 bool
	// NoExt refuses ext values of every type (timestamps included).
	NoExt bool
	// StrOrIntKeys refuses map keys other than str and integers.
	StrOrIntKeys bool
	// UniqueKeys refuses a map with the same key twice. Integer keys are
	// compared by value (1 as fixint and as uint16 are the same key), str
	// keys by their bytes, a str never equals an integer; other keys are
	// compared by their encoding.
	UniqueKeys bool
	// MaxLen, when positive, is the most elements an array and the most
	// pairs a map may declare. A decoder allocates for the declared count
	// before it reads the elements (a nil takes one byte, a decoded
	// element tens), so a count within the bytes present can still cost
	// dozens of times their size.
	MaxLen uint64
}

// Check reports whether b holds exactly one msgpack value whose declared
// lengths all fit in b and whose nesting is at most maxDepth.
func Check(b []byte, maxDepth int) error {
	return CheckWith(b, Options{MaxDepth: maxDepth})
}

// CheckWith is Check with the further rules of opts. Its errors say at
// which byte of b the fault is.
func CheckWith(b []byte, opts Options) error {
	c := checker{opts: opts, size: len(b)}
	rest, err := c.value(b, opts.MaxDepth)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d bytes after the value", ErrMalformed, len(rest))
	}
	return nil
}

type checker struct {
	opts Options
	// size is len of the whole input: size-len(b) is the offset of b.
	size int
	// keys and arena hold the normalised keys of the open maps (with
	// UniqueKeys): a map's keys are keys[its start:], each a span of arena.
	keys  []span
	arena []byte
}

type span struct{ start, end int }

// linearKeys is how many keys of one map are compared one by one before
// they move into a Go map.
const linearKeys = 16

func (c *checker) offset(b []byte) int { return c.size - len(b) }

// value checks one value at the start of b and returns what follows.
func (c *checker) value(b []byte, depth int) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: unexpected end", ErrMalformed)
	}
	if depth < 0 {
		return nil, fmt.Errorf("%w: nested too deeply", ErrMalformed)
	}
	start := b
	code := b[0]
	b = b[1:]
	switch {
	case code <= 0x7f || code >= 0xe0 || code == 0xc0 || code == 0xc2 || code == 0xc3:
		return b, nil
	case code >= 0x80 && code <= 0x8f:
		return c.mapEntries(b, uint64(code&0x0f), depth)
	case code >= 0x90 && code <= 0x9f:
		return c.items(b, uint64(code&0x0f), depth)
	case code >= 0xa0 && code <= 0xbf:
		return c.str(start, b, uint64(code&0x1f))
	}
	switch code {
	case 0xc4, 0xc5, 0xc6: // bin8, bin16, bin32
		return skipSized(b, 1<<(code-0xc4), 0)
	case 0xd9, 0xda, 0xdb: // str8, str16, str32
		n, rest, err := readLen(b, 1<<(code-0xd9))
		if err != nil {
			return nil, err
		}
		return c.str(start, rest, n)
	case 0xc7, 0xc8, 0xc9: // ext8, ext16, ext32: length, type, data
		if err := c.ext(start); err != nil {
			return nil, err
		}
		return skipSized(b, 1<<(code-0xc7), 1)
	case 0xca, 0xd2, 0xce: // float32, int32, uint32
		return skip(b, 4)
	case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
		return skip(b, 8)
	case 0xcc, 0xd0: // uint8, int8
		return skip(b, 1)
	case 0xcd, 0xd1: // uint16, int16
		return skip(b, 2)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16 plus a type byte
		if err := c.ext(start); err != nil {
			return nil, err
		}
		return skip(b, 1+(uint64(1)<<(code-0xd4)))
	case 0xdc, 0xdd, 0xde, 0xdf: // array16, array32, map16, map32
		size := 2 << (code & 1) // 16-bit length for 0xdc/0xde, 32-bit for 0xdd/0xdf
		n, rest, err := readLen(b, size)
		if err != nil {
			return nil, err
		}
		if code >= 0xde {
			return c.mapEntries(rest, n, depth)
		}
		return c.items(rest, n, depth)
	}
	return nil, fmt.Errorf("%w: reserved byte 0x%x", ErrMalformed, code)
}

// ext refuses the ext value at start when the options say so.
func (c *checker) ext(start []byte) error {
	if !c.opts.NoExt {
		return nil
	}
	// The type byte follows the length (ext8/16/32) or the code (fixext).
	typeAt := 1
	switch start[0] {
	case 0xc7:
		typeAt = 2
	case 0xc8:
		typeAt = 3
	case 0xc9:
		typeAt = 5
	}
	typ := "?"
	if len(start) > typeAt {
		typ = fmt.Sprint(int8(start[typeAt]))
	}
	return fmt.Errorf("%w: ext value (type %s) at byte %d is not allowed", ErrMalformed, typ, c.offset(start))
}

// str checks a str of n bytes at b, whose header starts at start.
func (c *checker) str(start, b []byte, n uint64) ([]byte, error) {
	rest, err := skip(b, n)
	if err != nil {
		return nil, err
	}
	if c.opts.UTF8 && !utf8.Valid(b[:n]) {
		return nil, fmt.Errorf("%w: str at byte %d is not valid UTF-8", ErrMalformed, c.offset(start))
	}
	return rest, nil
}

// items checks n values nested one level deeper. Every value takes at
// least one byte, so a count larger than the bytes left is refused at once.
func (c *checker) items(b []byte, n uint64, depth int) ([]byte, error) {
	if c.opts.MaxLen > 0 && n > c.opts.MaxLen {
		return nil, fmt.Errorf("%w: an array of %d elements at byte %d, over the cap of %d", ErrMalformed, n, c.offset(b), c.opts.MaxLen)
	}
	return c.values(b, n, depth)
}

// values checks n values nested one level deeper (an array's elements, or
// a map's keys and values alike).
func (c *checker) values(b []byte, n uint64, depth int) ([]byte, error) {
	if n > uint64(len(b)) {
		return nil, fmt.Errorf("%w: %d items declared, %d bytes left", ErrMalformed, n, len(b))
	}
	var err error
	for ; n > 0; n-- {
		if b, err = c.value(b, depth-1); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// mapEntries checks n key-value pairs nested one level deeper.
func (c *checker) mapEntries(b []byte, n uint64, depth int) ([]byte, error) {
	if c.opts.MaxLen > 0 && n > c.opts.MaxLen {
		return nil, fmt.Errorf("%w: a map of %d pairs at byte %d, over the cap of %d", ErrMalformed, n, c.offset(b), c.opts.MaxLen)
	}
	if n > uint64(len(b))/2 {
		return nil, fmt.Errorf("%w: %d items declared, %d bytes left", ErrMalformed, 2*n, len(b))
	}
	if !c.opts.StrOrIntKeys && !c.opts.UniqueKeys {
		return c.values(b, 2*n, depth)
	}
	firstKey, firstArena := len(c.keys), len(c.arena)
	defer func() {
		c.keys, c.arena = c.keys[:firstKey], c.arena[:firstArena]
	}()
	var set map[string]struct{}
	var err error
	for ; n > 0; n-- {
		key, at := b, c.offset(b)
		if b, err = c.value(b, depth-1); err != nil {
			return nil, err
		}
		key = key[:len(key)-len(b)]
		kind := keyKind(key)
		if c.opts.StrOrIntKeys && kind == keyOther {
			return nil, fmt.Errorf("%w: map key at byte %d is not a str or an integer", ErrMalformed, at)
		}
		if c.opts.UniqueKeys {
			if set, err = c.addKey(key, at, kind, set, firstKey); err != nil {
				return nil, err
			}
		}
		if b, err = c.value(b, depth-1); err != nil {
			return nil, err
		}
	}
	return b, nil
}

type kind int

const (
	keyOther kind = iota
	keyStr
	keyInt
)

func keyKind(key []byte) kind {
	switch code := key[0]; {
	case code >= 0xa0 && code <= 0xbf, code >= 0xd9 && code <= 0xdb:
		return keyStr
	case code <= 0x7f, code >= 0xe0, code >= 0xcc && code <= 0xcf, code >= 0xd0 && code <= 0xd3:
		return keyInt
	}
	return keyOther
}

// addKey normalises a map key (encoded as key at byte at, checked) into c.arena and
// refuses it if the map, whose keys start at c.keys[firstKey], has it.
// Past linearKeys keys the map's keys move into set, which it returns.
func (c *checker) addKey(key []byte, at int, k kind, set map[string]struct{}, firstKey int) (map[string]struct{}, error) {
	start := len(c.arena)
	switch k {
	case keyStr:
		c.arena = append(c.arena, 's')
		c.arena = append(c.arena, strBytes(key)...)
	case keyInt:
		c.arena = appendInt(c.arena, key)
	default:
		c.arena = append(c.arena, 'x')
		c.arena = append(c.arena, key...)
	}
	norm := c.arena[start:]
	dup := false
	if set != nil {
		_, dup = set[string(norm)]
	} else {
		for _, sp := range c.keys[firstKey:] {
			if string(c.arena[sp.start:sp.end]) == string(norm) {
				dup = true
				break
			}
		}
	}
	if dup {
		return nil, fmt.Errorf("%w: map key %s at byte %d appears twice in its map", ErrMalformed, describeKey(key, k), at)
	}
	if set != nil {
		set[string(norm)] = struct{}{}
		c.arena = c.arena[:start]
		return set, nil
	}
	c.keys = append(c.keys, span{start, len(c.arena)})
	if len(c.keys)-firstKey > linearKeys {
		set = make(map[string]struct{}, 2*linearKeys)
		for _, sp := range c.keys[firstKey:] {
			set[string(c.arena[sp.start:sp.end])] = struct{}{}
		}
		c.arena = c.arena[:c.keys[firstKey].start]
		c.keys = c.keys[:firstKey]
	}
	return set, nil
}

// strBytes is the content of a checked str.
func strBytes(key []byte) []byte {
	code := key[0]
	if code >= 0xa0 && code <= 0xbf {
		return key[1:]
	}
	return key[1+(1<<(code-0xd9)):]
}

// appendInt appends a checked integer key as 'u' and 8 big-endian bytes
// when it is at least zero, 'i' and its int64 bytes when negative, so that
// equal values have equal forms whatever their encoding.
func appendInt(dst, key []byte) []byte {
	code := key[0]
	var u uint64
	neg := false
	switch {
	case code <= 0x7f:
		u = uint64(code)
	case code >= 0xe0:
		u, neg = uint64(int64(int8(code))), true
	case code == 0xcc:
		u = uint64(key[1])
	case code == 0xcd:
		u = uint64(binary.BigEndian.Uint16(key[1:]))
	case code == 0xce:
		u = uint64(binary.BigEndian.Uint32(key[1:]))
	case code == 0xcf:
		u = binary.BigEndian.Uint64(key[1:])
	default: // 0xd0-0xd3: int8, int16, int32, int64
		var v int64
		switch code {
		case 0xd0:
			v = int64(int8(key[1]))
		case 0xd1:
			v = int64(int16(binary.BigEndian.Uint16(key[1:])))
		case 0xd2:
			v = int64(int32(binary.BigEndian.Uint32(key[1:])))
		default:
			v = int64(binary.BigEndian.Uint64(key[1:]))
		}
		u, neg = uint64(v), v < 0
	}
	tag := byte('u')
	if neg {
		tag = 'i'
	}
	return binary.BigEndian.AppendUint64(append(dst, tag), u)
}

func describeKey(key []byte, k kind) string {
	switch k {
	case keyStr:
		return fmt.Sprintf("%q", strBytes(key))
	case keyInt:
		norm := appendInt(nil, key)
		if norm[0] == 'i' {
			return fmt.Sprint(int64(binary.BigEndian.Uint64(norm[1:])))
		}
		return fmt.Sprint(binary.BigEndian.Uint64(norm[1:]))
	}
	return fmt.Sprintf("(encoded % x)", key)
}

// skipSized skips a length field of size bytes, extra bytes, then the data.
func skipSized(b []byte, size int, extra uint64) ([]byte, error) {
	n, rest, err := readLen(b, size)
	if err != nil {
		return nil, err
	}
	return skip(rest, n+extra)
}

func readLen(b []byte, size int) (uint64, []byte, error) {
	if len(b) < size {
		return 0, nil, fmt.Errorf("%w: truncated length", ErrMalformed)
	}
	switch size {
	case 1:
		return uint64(b[0]), b[1:], nil
	case 2:
		return uint64(binary.BigEndian.Uint16(b)), b[2:], nil
	default:
		return uint64(binary.BigEndian.Uint32(b)), b[4:], nil
	}
}

func skip(b []byte, n uint64) ([]byte, error) {
	if n > uint64(len(b)) {
		return nil, fmt.Errorf("%w: %d bytes declared, %d left", ErrMalformed, n, len(b))
	}
	return b[n:], nil
}
