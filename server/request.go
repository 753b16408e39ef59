package server

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/sandbox-exec/pyexec/internal/msgpackcheck"
	"github.com/sandbox-exec/pyexec/internal/strictjson"
	"github.com/sandbox-exec/pyexec/runner"
)

// executeRequest is the body of POST /execute.
type executeRequest struct {
	Script string
	// Input is the "input" field encoded as InputFormat (compact JSON text
	// or one msgpack value); nil when absent.
	Input []byte
	// Inputs are the elements of "inputs" (a batch), each encoded as
	// InputFormat; nil when absent.
	Inputs      [][]byte
	InputFormat runner.InputFormat
	// Stdin is "stdin", the script's standard input; nil when absent.
	Stdin     *string
	TimeoutMS *int64
	MemoryMB  *int64
	// Files are "files": name → content, base64 in JSON, bin in msgpack;
	// in the order given.
	Files []runner.File
	// Entrypoint is "entrypoint": "main" (the default) or "none" (run
	// the script as a cell); checked by validate.
	Entrypoint runner.Entrypoint
	// Runtime is "runtime", the runtime to run in; checked by validate,
	// empty: the default.
	Runtime string
}

// Fields of the request body. Keys are exact-case.
const (
	fieldScript    = "script"
	fieldInput     = "input"
	fieldInputs    = "inputs"
	fieldTimeoutMS = "timeout_ms"
	fieldMemoryMB  = "memory_mb"
	fieldFiles     = "files"
	fieldStdin     = "stdin"
	// fieldEntrypoint: "main" (call main, the default) or "none" (run
	// the top-level code as a notebook cell).
	fieldEntrypoint = "entrypoint"
	// fieldRuntime names the runtime (docs/operations.md, "Runtimes").
	fieldRuntime = "runtime"
)

func unknownField(key string) error {
	return invalidRequest(fmt.Sprintf("unknown field %q (fields are exact-case: %s, %s, %s, %s, %s, %s, %s, %s, %s)",
		key, fieldScript, fieldInput, fieldInputs, fieldFiles, fieldStdin, fieldTimeoutMS, fieldMemoryMB, fieldEntrypoint, fieldRuntime))
}

// maxInputDepth bounds the nesting of a body, JSON or msgpack (the
// envelope counts as one level).
const maxInputDepth = 512

// decodeRequest reads a body, JSON or msgpack alike: an object of the
// exact-case fields below, "script" required. Each field's rules are
// written once, here, for both formats.
func decodeRequest(b *bodyReader, cfg *Config) (executeRequest, error) {
	req := executeRequest{InputFormat: b.format}
	haveScript := false
	null, err := b.object(-1, func(key string) error {
		var err error
		switch key {
		case fieldScript:
			var s *string
			if s, err = readString(b, `"script" must be a string`); err == nil && s == nil {
				err = invalidRequest(`"script" must be a string`)
			} else if err == nil {
				req.Script, haveScript = *s, true
			}
		case fieldInput:
			req.Input, err = b.raw()
		case fieldInputs:
			req.Inputs, err = readInputs(b, cfg)
		case fieldFiles:
			req.Files, err = readFiles(b, cfg)
		case fieldStdin:
			req.Stdin, err = readString(b, `"stdin" must be a string`)
		case fieldTimeoutMS:
			req.TimeoutMS, err = readInt(b, key)
		case fieldMemoryMB:
			req.MemoryMB, err = readInt(b, key)
		case fieldEntrypoint:
			var name string
			name, err = readName(b, func() string { return entrypointInvalid })
			req.Entrypoint = runner.Entrypoint(name)
		case fieldRuntime:
			req.Runtime, err = readName(b, func() string { return runtimeInvalid(cfg) })
		default:
			return unknownField(key)
		}
		if _, ok := errors.AsType[*APIError](err); err != nil && !ok {
			err = invalidRequest(fmt.Sprintf("cannot read %q: %v", key, err))
		}
		return err
	})
	_, wrong := errors.AsType[*wrongType](err)
	switch {
	case errors.Is(err, errKeyType):
		return executeRequest{}, invalidRequest("keys of the body must be strings")
	case null || wrong:
		return executeRequest{}, invalidRequest("body must be " + b.words().object)
	case err != nil:
		if _, ok := errors.AsType[*APIError](err); !ok {
			err = invalidRequest("cannot read the body: " + err.Error())
		}
		return executeRequest{}, err
	case !haveScript:
		return executeRequest{}, invalidRequest(`"script" is required`)
	}
	return req, nil
}

// readString reads a string field: nil for null, notString the message
// for a value of another type.
func readString(b *bodyReader, notString string) (*string, error) {
	s, err := b.str()
	if _, ok := errors.AsType[*wrongType](err); ok {
		return nil, invalidRequest(notString)
	}
	return s, err
}

// readName reads a field that names one of a set (entrypoint, runtime):
// "" for null or absent; a value that is not a string, or is empty, is
// invalid_request with invalid's message (built only then: the runtimes'
// list is not formatted for every request). Validate checks the name.
func readName(b *bodyReader, invalid func() string) (string, error) {
	s, err := b.str()
	if _, ok := errors.AsType[*wrongType](err); ok || (err == nil && s != nil && *s == "") {
		return "", invalidRequest(invalid())
	}
	if err != nil || s == nil {
		return "", err
	}
	return *s, nil
}

// readInt reads an integer field (timeout_ms, memory_mb): nil for null.
func readInt(b *bodyReader, key string) (*int64, error) {
	n, err := b.int64()
	if wrong, ok := errors.AsType[*wrongType](err); ok {
		return nil, invalidRequest(fmt.Sprintf("%q must be an integer that fits in 64 bits, not %s", key, wrong.found))
	}
	return n, err
}

// readInputs reads "inputs", a batch: an array of values, each kept in
// the body's encoding. More than the cap is refused as it is read, before
// decoding allocates for more: a body's listed or declared elements cost
// the server more than their bytes.
func readInputs(b *bodyReader, cfg *Config) ([][]byte, error) {
	inputs := [][]byte{}
	err := b.array(cfg.MaxBatch, func() error {
		raw, err := b.raw()
		inputs = append(inputs, raw)
		return err
	})
	switch _, wrong := errors.AsType[*wrongType](err); {
	case wrong:
		return nil, invalidRequest(`"inputs" must be an array`)
	case errors.Is(err, errTooMany):
		return nil, invalidRequest(fmt.Sprintf(`"inputs" has more than %d elements, over the cap of %d`, cfg.MaxBatch, cfg.MaxBatch))
	case err != nil:
		return nil, err
	}
	return inputs, nil
}

// readFiles reads "files": an object of file name → content, or null for
// none; more than the cap is refused as it is read, as for "inputs".
func readFiles(b *bodyReader, cfg *Config) ([]runner.File, error) {
	files := []runner.File{}
	null, err := b.object(cfg.Limits.MaxFiles, func(name string) error {
		content, err := b.content(name)
		files = append(files, runner.File{Name: name, Content: content})
		return err
	})
	switch _, wrong := errors.AsType[*wrongType](err); {
	case wrong:
		return nil, invalidRequest(`"files" must be ` + b.words().files)
	case errors.Is(err, errKeyType):
		return nil, invalidRequest(`the file names in "files" must be strings`)
	case errors.Is(err, errTooMany):
		return nil, &APIError{Type: TypePayloadTooLarge, Status: http.StatusRequestEntityTooLarge,
			Message: fmt.Sprintf(`"files" has more than %d files, over the cap of %d`, cfg.Limits.MaxFiles, cfg.Limits.MaxFiles)}
	case err != nil || null:
		return nil, err
	}
	return files, nil
}

// decodeJSON parses a JSON body strictly: the whole body must be RFC 8259
// JSON, UTF-8 throughout, with no lone surrogate escapes, no key twice in
// any object; the top level is an object with exact-case known fields.
// A body that is not JSON is refused as that, whatever its fields.
func decodeJSON(body []byte, cfg *Config) (executeRequest, error) {
	b := bodyReader{format: runner.InputJSON, size: len(body)}
	b.json.Reset(body, strictjson.Options{MaxDepth: maxInputDepth, RejectDuplicateKeys: true})
	req, err := decodeRequest(&b, cfg)
	// The decoding stops at the first fault of a field; the rest of the
	// text is read for a fault of its syntax, which is the one told.
	if syntaxErr := b.json.Finish(); syntaxErr != nil {
		return executeRequest{}, invalidRequest("body is not valid JSON: " + syntaxErr.Error())
	}
	return req, err
}

// strictMsgpack are the rules of a msgpack body, those of JSON: UTF-8
// strings, no key twice in any map, map keys that JSON or Python can take
// (str or integers), no ext types.
var strictMsgpack = msgpackcheck.Options{
	MaxDepth: maxInputDepth, UTF8: true, NoExt: true, StrOrIntKeys: true, UniqueKeys: true,
}

// decodeMsgpack parses a msgpack body: a map with the same exact-case keys
// as JSON, checked whole first. "input" is passed on as its msgpack
// bytes, so bin stays bytes and integers stay exact (uint64 and negative
// int64 included).
func decodeMsgpack(body []byte, cfg *Config) (executeRequest, error) {
	if err := msgpackcheck.CheckWith(body, strictMsgpack); err != nil {
		return executeRequest{}, invalidRequest("body is not a valid msgpack request: " + err.Error())
	}
	// A bytes.Reader is read unbuffered: what is left of it is what the
	// decoder has not read.
	rd := bytes.NewReader(body)
	b := bodyReader{format: runner.InputMsgpack, body: body, rd: rd, dec: msgpack.NewDecoder(rd)}
	return decodeRequest(&b, cfg)
}

// bodyReader reads the values of one body, JSON or msgpack, each method
// one whole value. A value of another type than asked is a *wrongType
// error, after which the reader is left inside it: the decoding stops
// there. One type with a branch for each format, not an interface: an
// interface's methods would send the reader, the request being decoded
// and its callbacks to the heap.
type bodyReader struct {
	format runner.InputFormat

	// A JSON body, checked as it is read.
	json strictjson.Reader
	size int // of the body
	// compact holds the compact text of "input" and of the elements of
	// "inputs", each a slice of it: allocated once, at most the size of
	// the rest of the body.
	compact []byte
	// scratch holds an escaped file content while it is decoded.
	scratch []byte

	// A msgpack body, checked by msgpackcheck (so its lengths fit and its
	// maps repeat no key).
	body []byte
	rd   *bytes.Reader
	dec  *msgpack.Decoder
}

// wrongType is a value of another type than its field's; found says what
// it is ("an array", the text of a number).
type wrongType struct{ found string }

func (e *wrongType) Error() string { return "unexpected " + e.found }

var (
	errTooMany = errors.New("too many elements")
	errKeyType = errors.New("a key is not a string")
)

// formatWords are the names of a body format's types, for messages.
type formatWords struct {
	object string // what the body must be
	files  string // what "files" must be
}

var (
	jsonWords    = formatWords{object: "a JSON object", files: "an object of file name to base64 content"}
	msgpackWords = formatWords{object: "a msgpack map", files: "a map of file name to bin content"}
)

func (b *bodyReader) words() *formatWords {
	if b.format == runner.InputMsgpack {
		return &msgpackWords
	}
	return &jsonWords
}

// str reads a string, or null (nil).
func (b *bodyReader) str() (*string, error) {
	if b.format == runner.InputMsgpack {
		return b.msgpackStr()
	}
	return b.jsonStr()
}

// int64 reads an integer that fits in 64 bits, or null (nil).
func (b *bodyReader) int64() (*int64, error) {
	if b.format == runner.InputMsgpack {
		return b.msgpackInt64()
	}
	return b.jsonInt64()
}

// raw reads any value, kept in the body's encoding: compact JSON text or
// msgpack bytes.
func (b *bodyReader) raw() ([]byte, error) {
	if b.format == runner.InputMsgpack {
		return b.msgpackRaw()
	}
	return b.jsonRaw()
}

// array reads an array, calling elem to read each element; one more than
// limit is errTooMany, found before it is read.
func (b *bodyReader) array(limit int, elem func() error) error {
	if b.format == runner.InputMsgpack {
		return b.msgpackArray(limit, elem)
	}
	return b.jsonArray(limit, elem)
}

// object reads an object (a map with str keys) or null, calling entry to
// read the value of each key; a key that is not a str is errKeyType, one
// more than limit (if not negative) errTooMany.
func (b *bodyReader) object(limit int, entry func(key string) error) (null bool, err error) {
	if b.format == runner.InputMsgpack {
		return b.msgpackObject(limit, entry)
	}
	return b.jsonObject(limit, entry)
}

// content reads the content of the file name: a base64 string in JSON,
// bin or str in msgpack. Its errors are the client's to read.
func (b *bodyReader) content(name string) ([]byte, error) {
	if b.format == runner.InputMsgpack {
		return b.msgpackContent(name)
	}
	return b.jsonContent(name)
}

// jsonWrongType describes the token that opened a value of the wrong type.
func jsonWrongType(tok strictjson.Token) error {
	switch tok.Kind {
	case strictjson.ObjectStart:
		return &wrongType{found: "an object"}
	case strictjson.ArrayStart:
		return &wrongType{found: "an array"}
	case strictjson.String:
		return &wrongType{found: "a string"}
	case strictjson.Number:
		return &wrongType{found: clipText(string(tok.Raw), 40)}
	}
	return &wrongType{found: string(tok.Raw)} // true, false, null
}

func (b *bodyReader) jsonStr() (*string, error) {
	tok, err := b.json.Next()
	switch {
	case err != nil:
		return nil, err
	case tok.Kind == strictjson.Null:
		return nil, nil
	case tok.Kind != strictjson.String:
		return nil, jsonWrongType(tok)
	}
	s := tok.Text()
	return &s, nil
}

func (b *bodyReader) jsonInt64() (*int64, error) {
	tok, err := b.json.Next()
	switch {
	case err != nil:
		return nil, err
	case tok.Kind == strictjson.Null:
		return nil, nil
	case tok.Kind != strictjson.Number:
		return nil, jsonWrongType(tok)
	}
	n, err := strconv.ParseInt(string(tok.Raw), 10, 64)
	if err != nil {
		return nil, jsonWrongType(tok)
	}
	return &n, nil
}

func (b *bodyReader) jsonRaw() ([]byte, error) {
	if b.compact == nil {
		b.compact = make([]byte, 0, b.size-b.json.InputOffset())
	}
	start := len(b.compact)
	var err error
	if b.compact, err = b.json.AppendValue(b.compact); err != nil {
		return nil, err
	}
	return b.compact[start:len(b.compact):len(b.compact)], nil
}

func (b *bodyReader) jsonArray(limit int, elem func() error) error {
	tok, err := b.json.Next()
	switch {
	case err != nil:
		return err
	case tok.Kind != strictjson.ArrayStart:
		return jsonWrongType(tok)
	}
	for n := 0; b.json.More(); n++ {
		if n == limit {
			return errTooMany
		}
		if err := elem(); err != nil {
			return err
		}
	}
	_, err = b.json.Next() // ']'
	return err
}

func (b *bodyReader) jsonObject(limit int, entry func(key string) error) (bool, error) {
	tok, err := b.json.Next()
	switch {
	case err != nil:
		return false, err
	case tok.Kind == strictjson.Null:
		return true, nil
	case tok.Kind != strictjson.ObjectStart:
		return false, jsonWrongType(tok)
	}
	for n := 0; b.json.More(); n++ {
		key, err := b.json.Next()
		if err != nil {
			return false, err
		}
		if n == limit {
			return false, errTooMany
		}
		if err := entry(key.Text()); err != nil {
			return false, err
		}
	}
	_, err = b.json.Next() // '}'
	return false, err
}

// jsonContent reads standard base64 with padding; "\/" is '/' still, as
// PHP's json_encode writes it.
func (b *bodyReader) jsonContent(name string) ([]byte, error) {
	tok, err := b.json.Next()
	if err != nil {
		return nil, err
	}
	if tok.Kind != strictjson.String {
		return nil, invalidRequest(fmt.Sprintf("file %q: the content must be a base64 string", name))
	}
	b.scratch = tok.AppendText(b.scratch[:0])
	enc := base64.StdEncoding.Strict()
	decoded := make([]byte, enc.DecodedLen(len(b.scratch)))
	n, err := enc.Decode(decoded, b.scratch)
	if err != nil {
		return nil, invalidRequest(fmt.Sprintf("file %q: the content is not standard base64: %v", name, err))
	}
	return decoded[:n], nil
}

// msgpackPeek looks at the next value's first byte before it is decoded:
// a nil is skipped (null true) where nullable, and a value whose code is
// does not accept is a wrongType.
func (b *bodyReader) msgpackPeek(is func(code byte) bool, nullable bool) (code byte, null bool, err error) {
	code, err = b.dec.PeekCode()
	switch {
	case err != nil:
		return 0, false, err
	case nullable && code == 0xc0:
		return code, true, b.dec.Skip()
	case !is(code):
		return code, false, &wrongType{found: msgpackType(code)}
	}
	return code, false, nil
}

func (b *bodyReader) msgpackStr() (*string, error) {
	if _, null, err := b.msgpackPeek(isMsgpackStr, true); err != nil || null {
		return nil, err
	}
	s, err := b.dec.DecodeString()
	return &s, err
}

func (b *bodyReader) msgpackInt64() (*int64, error) {
	// Only scalars reach DecodeInterface: it would allocate for the
	// declared length of an array or a map.
	code, _, err := b.msgpackPeek(isMsgpackScalar, false)
	if err != nil {
		return nil, err
	}
	value, err := b.dec.DecodeInterface()
	if err != nil || value == nil {
		return nil, err
	}
	n, ok := msgpackInt(value)
	if !ok {
		switch value.(type) {
		case float32, float64:
			return nil, &wrongType{found: fmt.Sprintf("the float %v", value)}
		case uint64:
			return nil, &wrongType{found: fmt.Sprint(value)}
		}
		return nil, &wrongType{found: msgpackType(code)}
	}
	return &n, nil
}

// msgpackRaw returns the value's bytes in the body, not a copy: the request
// lives no longer than its body.
func (b *bodyReader) msgpackRaw() ([]byte, error) {
	start := len(b.body) - b.rd.Len()
	if err := b.dec.Skip(); err != nil {
		return nil, err
	}
	end := len(b.body) - b.rd.Len()
	return b.body[start:end:end], nil
}

func (b *bodyReader) msgpackArray(limit int, elem func() error) error {
	if _, _, err := b.msgpackPeek(isMsgpackArray, false); err != nil {
		return err
	}
	n, err := b.dec.DecodeArrayLen()
	switch {
	case err != nil:
		return err
	case limit >= 0 && n > limit:
		return errTooMany
	}
	for range n {
		if err := elem(); err != nil {
			return err
		}
	}
	return nil
}

func (b *bodyReader) msgpackObject(limit int, entry func(key string) error) (bool, error) {
	if _, null, err := b.msgpackPeek(isMsgpackMap, true); err != nil || null {
		return null, err
	}
	n, err := b.dec.DecodeMapLen()
	switch {
	case err != nil:
		return false, err
	case limit >= 0 && n > limit:
		return false, errTooMany
	}
	for range n {
		if code, err := b.dec.PeekCode(); err != nil || !isMsgpackStr(code) {
			return false, errKeyType
		}
		key, err := b.dec.DecodeString()
		if err != nil {
			return false, err
		}
		if err := entry(key); err != nil {
			return false, err
		}
	}
	return false, nil
}

// msgpackContent reads bin, or str for text.
func (b *bodyReader) msgpackContent(name string) ([]byte, error) {
	code, err := b.dec.PeekCode()
	if err != nil || !(isMsgpackStr(code) || isMsgpackBin(code)) {
		return nil, invalidRequest(fmt.Sprintf("file %q: the content must be bin (or str)", name))
	}
	content, err := b.dec.DecodeBytes()
	if err != nil {
		return nil, invalidRequest(fmt.Sprintf("file %q: the content must be bin (or str): %v", name, err))
	}
	return content, nil
}

func isMsgpackMap(code byte) bool {
	return code >= 0x80 && code <= 0x8f || code == 0xde || code == 0xdf
}

func isMsgpackArray(code byte) bool {
	return code >= 0x90 && code <= 0x9f || code == 0xdc || code == 0xdd
}

func isMsgpackBin(code byte) bool { return code >= 0xc4 && code <= 0xc6 }

// isMsgpackScalar says code starts nil, a boolean, an integer or a float.
func isMsgpackScalar(code byte) bool {
	return code <= 0x7f || code >= 0xe0 || code == 0xc0 || code == 0xc2 || code == 0xc3 || code >= 0xca && code <= 0xd3
}

func isMsgpackStr(code byte) bool {
	return code >= 0xa0 && code <= 0xbf || code >= 0xd9 && code <= 0xdb
}

// msgpackType names the type of the value whose code is code, for a
// message.
func msgpackType(code byte) string {
	switch {
	case isMsgpackStr(code):
		return "a str"
	case isMsgpackBin(code):
		return "bin"
	case isMsgpackMap(code):
		return "a map"
	case isMsgpackArray(code):
		return "an array"
	case code == 0xc0:
		return "nil"
	case code == 0xc2 || code == 0xc3:
		return "a boolean"
	case code == 0xca || code == 0xcb:
		return "a float"
	case isMsgpackScalar(code):
		return "an integer"
	}
	return "an ext value"
}

// msgpackInt accepts any msgpack integer that fits an int64.
func msgpackInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		return int64(n), n <= math.MaxInt64
	}
	return 0, false
}

// entrypointInvalid refuses an "entrypoint" that is not one of its values.
const entrypointInvalid = `"entrypoint" must be "main" (call main, the default) or "none" (run the script's top-level code as a notebook cell)`

// runtimeInvalid says which runtimes there are.
func runtimeInvalid(cfg *Config) string {
	names := runtimeNames(cfg)
	return fmt.Sprintf(`"runtime" must name one of this server's runtimes: %s (default %s)`,
		strings.Join(names, ", "), names[0])
}

// runtimeNames are the runtimes' names, the default first.
func runtimeNames(cfg *Config) []string {
	if len(cfg.Runtimes) == 0 {
		return []string{"host"}
	}
	names := make([]string, len(cfg.Runtimes))
	for i, rt := range cfg.Runtimes {
		names[i] = rt.Name
	}
	return names
}

// validate checks the envelope against the server's limits.
func (req *executeRequest) validate(cfg *Config) error {
	if req.Script == "" {
		return invalidRequest(`"script" must not be empty`)
	}
	if names := runtimeNames(cfg); req.Runtime == "" {
		req.Runtime = names[0]
	} else if !slices.Contains(names, req.Runtime) {
		return invalidRequest(runtimeInvalid(cfg))
	}
	switch req.Entrypoint {
	case "":
		req.Entrypoint = runner.EntrypointMain
	case runner.EntrypointMain, runner.EntrypointNone:
	default:
		return invalidRequest(entrypointInvalid)
	}
	if req.Inputs != nil {
		switch {
		case req.Input != nil:
			return invalidRequest(`give "input" or "inputs", not both`)
		case len(req.Inputs) == 0:
			return invalidRequest(`"inputs" must not be empty`)
		}
	}
	if !utf8.ValidString(req.Script) {
		return invalidRequest(`"script" must be UTF-8`)
	}
	if at := strings.IndexByte(req.Script, 0); at >= 0 {
		// Python cannot compile it; refused before a sandbox is spent.
		return nulByte(req.Script, at)
	}
	if len(req.Script) > cfg.MaxScriptBytes {
		return &APIError{Type: TypePayloadTooLarge, Status: 413,
			Message: fmt.Sprintf(`"script" is %d bytes, over the cap of %d`, len(req.Script), cfg.MaxScriptBytes)}
	}
	if err := req.validateFiles(cfg); err != nil {
		return err
	}
	if req.TimeoutMS != nil {
		maxMS := cfg.MaxTimeout.Milliseconds()
		if *req.TimeoutMS < 1 || *req.TimeoutMS > maxMS {
			return invalidRequest(fmt.Sprintf(`"timeout_ms" must be between 1 and %d`, maxMS))
		}
	}
	if req.MemoryMB != nil {
		if minMB := runner.MinMemoryBytes >> 20; *req.MemoryMB < minMB || *req.MemoryMB > cfg.MaxMemoryMB {
			return invalidRequest(fmt.Sprintf(`"memory_mb" must be between %d (the smallest the service accepts) and %d`, minMB, cfg.MaxMemoryMB))
		}
	}
	return nil
}

// nulByte is the syntax_error of a script holding a NUL byte at byte at:
// located as Python locates it (1-based line, and column in characters).
func nulByte(script string, at int) error {
	lineStart := strings.LastIndexByte(script[:at], '\n') + 1
	line := strings.Count(script[:at], "\n") + 1
	column := utf8.RuneCountInString(script[lineStart:at]) + 1
	return &runner.ScriptError{Kind: runner.KindSyntaxError, Line: line, Offset: column,
		Message: fmt.Sprintf("SyntaxError: source code cannot contain null bytes (a NUL at line %d, column %d)", line, column)}
}

// validateFiles checks "files" against the caps and the name rules. The
// first part of a name may not be "output": the output directory is the
// script's, and what is in it goes back.
func (req *executeRequest) validateFiles(cfg *Config) error {
	names := make(map[string]bool, len(req.Files))
	for _, f := range req.Files {
		names[f.Name] = true
	}
	total := 0
	for _, f := range req.Files {
		if err := runner.CheckFileName(f.Name); err != nil {
			return invalidRequest(`"files": ` + err.Error())
		}
		for dir := f.Name; strings.Contains(dir, "/"); {
			dir = dir[:strings.LastIndexByte(dir, '/')]
			if names[dir] {
				return invalidRequest(fmt.Sprintf(`"files": %q is a file, so it cannot be the directory of %q`, dir, f.Name))
			}
		}
		if first, _, _ := strings.Cut(f.Name, "/"); first == "output" {
			return invalidRequest(fmt.Sprintf(`"files": %q is in the output directory, which belongs to the script's results`, f.Name))
		}
		if int64(len(f.Content)) > cfg.Limits.FileSizeBytes {
			return &APIError{Type: TypePayloadTooLarge, Status: http.StatusRequestEntityTooLarge,
				Message: fmt.Sprintf(`"files": %q is %d bytes, over the file size limit of %d`, f.Name, len(f.Content), cfg.Limits.FileSizeBytes)}
		}
		total += len(f.Content)
	}
	if total > cfg.Limits.FilesBytes {
		return &APIError{Type: TypePayloadTooLarge, Status: http.StatusRequestEntityTooLarge,
			Message: fmt.Sprintf(`"files" hold %d bytes together, over the cap of %d`, total, cfg.Limits.FilesBytes)}
	}
	// Names are unique: JSON objects and msgpack maps with a key twice
	// were refused by the strict decoders. Two may still be one name on a
	// file system that ignores case or normalisation: refused as on the
	// way out, so a request's files are ones a client could have saved.
	if len(req.Files) > 1 {
		list := make([]string, len(req.Files))
		for i, f := range req.Files {
			list[i] = f.Name
		}
		if err := runner.CheckFileNames(list); err != nil {
			return invalidRequest(`"files": ` + err.Error())
		}
	}
	return nil
}

// timeout is the wall-clock limit of the request.
func (req *executeRequest) timeout(cfg *Config) time.Duration {
	if req.TimeoutMS != nil {
		return time.Duration(*req.TimeoutMS) * time.Millisecond
	}
	return cfg.MaxTimeout
}
