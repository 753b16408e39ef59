// Package msgpackcheck validates the structure of untrusted msgpack bytes
// before they are decoded. The msgpack decoder trusts declared lengths and
// would allocate what a 9-byte body claims (gigabytes for one ext header);
// Check walks the headers without allocating and refuses any length that
// does not fit in the bytes actually present, and nesting past a depth.
package msgpackcheck

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed wraps every reason Check refuses its input.
var ErrMalformed = errors.New("malformed msgpack")

// Check reports whether b holds exactly one msgpack value whose declared
// lengths all fit in b and whose nesting is at most maxDepth.
func Check(b []byte, maxDepth int) error {
	rest, err := checkValue(b, maxDepth)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d bytes after the value", ErrMalformed, len(rest))
	}
	return nil
}

// checkValue checks one value at the start of b and returns what follows.
func checkValue(b []byte, depth int) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: unexpected end", ErrMalformed)
	}
	if depth < 0 {
		return nil, fmt.Errorf("%w: nested too deeply", ErrMalformed)
	}
	c := b[0]
	b = b[1:]
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		return b, nil
	case c >= 0x80 && c <= 0x8f:
		return checkItems(b, 2*uint64(c&0x0f), depth)
	case c >= 0x90 && c <= 0x9f:
		return checkItems(b, uint64(c&0x0f), depth)
	case c >= 0xa0 && c <= 0xbf:
		return skip(b, uint64(c&0x1f))
	}
	switch c {
	case 0xc4, 0xd9: // bin8, str8
		return skipSized(b, 1, 0)
	case 0xc5, 0xda: // bin16, str16
		return skipSized(b, 2, 0)
	case 0xc6, 0xdb: // bin32, str32
		return skipSized(b, 4, 0)
	case 0xc7: // ext8: length, type, data
		return skipSized(b, 1, 1)
	case 0xc8:
		return skipSized(b, 2, 1)
	case 0xc9:
		return skipSized(b, 4, 1)
	case 0xca, 0xd2, 0xce: // float32, int32, uint32
		return skip(b, 4)
	case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
		return skip(b, 8)
	case 0xcc, 0xd0: // uint8, int8
		return skip(b, 1)
	case 0xcd, 0xd1: // uint16, int16
		return skip(b, 2)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16 plus a type byte
		return skip(b, 1+(uint64(1)<<(c-0xd4)))
	case 0xdc, 0xdd, 0xde, 0xdf: // array16, array32, map16, map32
		size := 2 << (c & 1) // 16-bit length for 0xdc/0xde, 32-bit for 0xdd/0xdf
		n, rest, err := readLen(b, size)
		if err != nil {
			return nil, err
		}
		if c >= 0xde { // a map holds a key and a value per entry
			n *= 2
		}
		return checkItems(rest, n, depth)
	}
	return nil, fmt.Errorf("%w: reserved byte 0x%x", ErrMalformed, c)
}

// checkItems checks n values nested one level deeper. Every value takes at
// least one byte, so a count larger than the bytes left is refused at once.
func checkItems(b []byte, n uint64, depth int) ([]byte, error) {
	if n > uint64(len(b)) {
		return nil, fmt.Errorf("%w: %d items declared, %d bytes left", ErrMalformed, n, len(b))
	}
	var err error
	for ; n > 0; n-- {
		if b, err = checkValue(b, depth-1); err != nil {
			return nil, err
		}
	}
	return b, nil
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
