// Package msgpackcheck validates the structure of untrusted msgpack bytes
// before they are decoded. The msgpack decoder trusts declared lengths and
// would allocate what a 9-byte body claims (gigabytes for one ext header);
// Check walks the headers without allocating and refuses any length that
// does not fit in the bytes actually present, and nesting past a depth.
// CheckWith adds the rules of a strict request body: UTF-8 strings, no ext
// values, str or integer map keys, no key twice in a map.
package msgpackcheck

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
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
	c := checker{opts: opts, input: b, size: len(b)}
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
	// input is the whole input, size its length: size-len(b) is the
	// offset of b in it.
	input []byte
	size  int
	// keys are the keys of the open maps (with UniqueKeys), as offsets
	// and lengths in input: a map's keys are keys[its start:]. Eight bytes
	// a key, whatever the key: a map of a million one-byte keys costs a
	// few times its body, not the hundred megabytes a Go map of strings
	// took.
	keys []keyRef
}

// keyRef is a map key's encoding in the input.
type keyRef struct{ at, n uint32 }

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
	firstKey := len(c.keys)
	defer func() { c.keys = c.keys[:firstKey] }()
	if c.opts.UniqueKeys && n > linearKeys {
		// Once, for the count declared (at most a pair per two bytes
		// left, checked above), rather than grown step by step.
		c.keys = slices.Grow(c.keys, int(n))
	}
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
			if err = c.addKey(keyRef{at: uint32(at), n: uint32(len(key))}, firstKey); err != nil {
				return nil, err
			}
		}
		if b, err = c.value(b, depth-1); err != nil {
			return nil, err
		}
	}
	if c.opts.UniqueKeys && len(c.keys)-firstKey > linearKeys {
		if err := c.sortedUnique(c.keys[firstKey:]); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// sortedUnique refuses a big map with a key twice: its keys are sorted
// by their normal form and neighbours compared, without a copy of any key.
func (c *checker) sortedUnique(keys []keyRef) error {
	slices.SortFunc(keys, func(a, b keyRef) int {
		if d := compareKeys(c.norm(a), c.norm(b)); d != 0 {
			return d
		}
		return cmp.Compare(a.at, b.at)
	})
	for i := 1; i < len(keys); i++ {
		if compareKeys(c.norm(keys[i-1]), c.norm(keys[i])) == 0 {
			return c.duplicate(keys[i])
		}
	}
	return nil
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

// addKey records a map key (checked) for its map, whose keys start at
// c.keys[firstKey]. The first linearKeys keys of a map are compared one by
// one as they come; a bigger map is checked once, sorted, at its end
// (sortedUnique).
func (c *checker) addKey(key keyRef, firstKey int) error {
	if len(c.keys)-firstKey < linearKeys {
		k := c.norm(key)
		for _, other := range c.keys[firstKey:] {
			if compareKeys(c.norm(other), k) == 0 {
				return c.duplicate(key)
			}
		}
	}
	c.keys = append(c.keys, key)
	return nil
}

func (c *checker) duplicate(key keyRef) error {
	return fmt.Errorf("%w: map key %s at byte %d appears twice in its map", ErrMalformed, describeKey(c.norm(key)), key.at)
}

// normKey is a key in a form where equal values are equal whatever their
// encoding: an integer by sign and value (1 as fixint and as uint16 are
// one key), a str by its bytes, anything else by its encoding.
type normKey struct {
	tag byte // 'i' (negative integer), 'u' (integer at least zero), 's' (str), 'x' (other)
	n   uint64
	b   []byte // a slice of the input: no copy
}

func (c *checker) norm(r keyRef) normKey {
	key := c.input[r.at : r.at+r.n]
	switch keyKind(key) {
	case keyStr:
		return normKey{tag: 's', b: strBytes(key)}
	case keyInt:
		neg, n := intKey(key)
		if neg {
			return normKey{tag: 'i', n: n}
		}
		return normKey{tag: 'u', n: n}
	}
	return normKey{tag: 'x', b: key}
}

func compareKeys(a, b normKey) int {
	if a.tag != b.tag {
		return cmp.Compare(a.tag, b.tag)
	}
	if a.tag == 'i' || a.tag == 'u' {
		return cmp.Compare(a.n, b.n)
	}
	return bytes.Compare(a.b, b.b)
}

// strBytes is the content of a checked str.
func strBytes(key []byte) []byte {
	code := key[0]
	if code >= 0xa0 && code <= 0xbf {
		return key[1:]
	}
	return key[1+(1<<(code-0xd9)):]
}

// intKey is a checked integer key's sign and value (its bits as an
// int64 when negative).
func intKey(key []byte) (neg bool, u uint64) {
	code := key[0]
	switch {
	case code <= 0x7f:
		return false, uint64(code)
	case code >= 0xe0:
		return true, uint64(int64(int8(code)))
	case code == 0xcc:
		return false, uint64(key[1])
	case code == 0xcd:
		return false, uint64(binary.BigEndian.Uint16(key[1:]))
	case code == 0xce:
		return false, uint64(binary.BigEndian.Uint32(key[1:]))
	case code == 0xcf:
		return false, binary.BigEndian.Uint64(key[1:])
	}
	var v int64 // 0xd0-0xd3: int8, int16, int32, int64
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
	return v < 0, uint64(v)
}

func describeKey(k normKey) string {
	switch k.tag {
	case 's':
		return fmt.Sprintf("%q", k.b)
	case 'u':
		return fmt.Sprint(k.n)
	case 'i':
		return fmt.Sprint(int64(k.n))
	}
	return fmt.Sprintf("(encoded % x)", k.b)
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
