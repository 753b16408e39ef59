package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
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

// setInt stores the integer field key (timeout_ms or memory_mb).
func (req *executeRequest) setInt(key string, n int64) {
	if key == fieldTimeoutMS {
		req.TimeoutMS = &n
	} else {
		req.MemoryMB = &n
	}
}

func unknownField(key string) error {
	return invalidRequest(fmt.Sprintf("unknown field %q (fields are exact-case: %s, %s, %s, %s, %s, %s, %s, %s, %s)",
		key, fieldScript, fieldInput, fieldInputs, fieldFiles, fieldStdin, fieldTimeoutMS, fieldMemoryMB, fieldEntrypoint, fieldRuntime))
}

// batchTooLong and filesTooMany refuse counts over the caps while they are
// read, before decoding allocates for more: a body's listed or declared
// elements cost the server more than their bytes.
func batchTooLong(cfg *Config) error {
	return invalidRequest(fmt.Sprintf(`"inputs" has more than %d elements, over the cap of %d`, cfg.MaxBatch, cfg.MaxBatch))
}

func filesTooMany(cfg *Config) error {
	return &APIError{Type: TypePayloadTooLarge, Status: http.StatusRequestEntityTooLarge,
		Message: fmt.Sprintf(`"files" has more than %d files, over the cap of %d`, cfg.MaxFiles, cfg.MaxFiles)}
}

// maxInputDepth bounds the nesting of a body, JSON or msgpack (the
// envelope counts as one level).
const maxInputDepth = 512

// decodeJSON parses a JSON body strictly: the whole body must be RFC 8259
// JSON, UTF-8 throughout, with no lone surrogate escapes, no key twice in
// any object; the top level is an object with exact-case known fields.
func decodeJSON(body []byte, cfg *Config) (executeRequest, error) {
	doc, err := strictjson.Compact(make([]byte, 0, len(body)), body,
		strictjson.Options{MaxDepth: maxInputDepth, RejectDuplicateKeys: true})
	if err != nil {
		return executeRequest{}, invalidRequest("body is not valid JSON: " + err.Error())
	}
	if doc[0] != '{' {
		return executeRequest{}, invalidRequest("body must be a JSON object")
	}
	req := executeRequest{InputFormat: runner.InputJSON}
	haveScript := false
	// doc is valid and compact: {"key":value,"key":value}
	for i := 1; doc[i] != '}'; {
		keyEnd := skipJSONString(doc, i)
		key, err := unquoteJSON(doc[i:keyEnd])
		if err != nil {
			return executeRequest{}, invalidRequest("cannot read a key of the body: " + err.Error())
		}
		valueStart := keyEnd + 1 // past ':'
		valueEnd := skipJSONValue(doc, valueStart)
		value := doc[valueStart:valueEnd]
		switch key {
		case fieldScript:
			if value[0] != '"' {
				return executeRequest{}, invalidRequest(fmt.Sprintf("%q must be a string", key))
			}
			if req.Script, err = unquoteJSON(value); err != nil {
				return executeRequest{}, invalidRequest(fmt.Sprintf("cannot read %q: %v", key, err))
			}
			haveScript = true
		case fieldInput:
			req.Input = value
		case fieldStdin:
			if string(value) == "null" {
				break // absent
			}
			if value[0] != '"' {
				return executeRequest{}, invalidRequest(`"stdin" must be a string`)
			}
			text, err := unquoteJSON(value)
			if err != nil {
				return executeRequest{}, invalidRequest(fmt.Sprintf("cannot read %q: %v", key, err))
			}
			req.Stdin = &text
		case fieldInputs:
			if value[0] != '[' {
				return executeRequest{}, invalidRequest(`"inputs" must be an array`)
			}
			req.Inputs = [][]byte{}
			for j := 1; value[j] != ']'; {
				if len(req.Inputs) == cfg.MaxBatch {
					return executeRequest{}, batchTooLong(cfg)
				}
				end := skipJSONValue(value, j)
				req.Inputs = append(req.Inputs, value[j:end])
				j = end
				if value[j] == ',' {
					j++
				}
			}
		case fieldFiles:
			if req.Files, err = decodeJSONFiles(value, cfg); err != nil {
				return executeRequest{}, err
			}
		case fieldEntrypoint:
			if string(value) == "null" {
				break // absent
			}
			if value[0] != '"' {
				return executeRequest{}, invalidRequest(entrypointInvalid)
			}
			text, err := unquoteJSON(value)
			if err != nil || text == "" {
				return executeRequest{}, invalidRequest(entrypointInvalid)
			}
			req.Entrypoint = runner.Entrypoint(text)
		case fieldRuntime:
			if string(value) == "null" {
				break // absent
			}
			text, err := unquoteJSON(value)
			if value[0] != '"' || err != nil || text == "" {
				return executeRequest{}, invalidRequest(runtimeInvalid(cfg))
			}
			req.Runtime = text
		case fieldTimeoutMS, fieldMemoryMB:
			if string(value) == "null" {
				break // absent
			}
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil {
				return executeRequest{}, invalidRequest(fmt.Sprintf("%q must be an integer that fits in 64 bits, not %.40s", key, value))
			}
			req.setInt(key, n)
		default:
			return executeRequest{}, unknownField(key)
		}
		i = valueEnd
		if doc[i] == ',' {
			i++
		}
	}
	if !haveScript {
		return executeRequest{}, invalidRequest(`"script" is required`)
	}
	return req, nil
}

// unquoteJSON unescapes a JSON string already checked by strictjson (so
// UTF-8 and surrogate pairs are sound and nothing is replaced).
func unquoteJSON(quoted []byte) (string, error) {
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), nil
	}
	var s string
	err := json.Unmarshal(quoted, &s)
	return s, err
}

// skipJSONString returns the end of the string starting at doc[i] ('"'):
// the first quote after it not escaped by an odd run of backslashes.
func skipJSONString(doc []byte, i int) int {
	for i++; ; {
		q := i + bytes.IndexByte(doc[i:], '"')
		backslashes := 0
		for k := q - 1; k >= i && doc[k] == '\\'; k-- {
			backslashes++
		}
		if backslashes%2 == 0 {
			return q + 1
		}
		i = q + 1
	}
}

// skipJSONValue returns the end of the value starting at doc[i], in valid
// compact JSON.
func skipJSONValue(doc []byte, i int) int {
	switch doc[i] {
	case '"':
		return skipJSONString(doc, i)
	case '{', '[':
		depth := 0
		for {
			switch doc[i] {
			case '"':
				i = skipJSONString(doc, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	default:
		for i < len(doc) && doc[i] != ',' && doc[i] != '}' && doc[i] != ']' {
			i++
		}
		return i
	}
}

// strictMsgpack are the rules of a msgpack body, those of JSON: UTF-8
// strings, no key twice in any map, map keys that JSON or Python can take
// (str or integers), no ext types.
var strictMsgpack = msgpackcheck.Options{
	MaxDepth: maxInputDepth, UTF8: true, NoExt: true, StrOrIntKeys: true, UniqueKeys: true,
}

// decodeMsgpack parses a msgpack body: a map with the same exact-case keys
// as JSON. "input" is passed on as its msgpack bytes, so bin stays bytes
// and integers stay exact (uint64 and negative int64 included).
func decodeMsgpack(body []byte, cfg *Config) (executeRequest, error) {
	if err := msgpackcheck.CheckWith(body, strictMsgpack); err != nil {
		return executeRequest{}, invalidRequest("body is not a valid msgpack request: " + err.Error())
	}
	if !isMsgpackMap(body[0]) {
		return executeRequest{}, invalidRequest("body must be a msgpack map")
	}
	dec := msgpack.NewDecoder(bytes.NewReader(body))
	n, err := dec.DecodeMapLen()
	if err != nil {
		return executeRequest{}, invalidRequest("body is not a valid msgpack map: " + err.Error())
	}
	req := executeRequest{InputFormat: runner.InputMsgpack}
	haveScript := false
	for ; n > 0; n-- {
		code, err := dec.PeekCode()
		if err != nil {
			return executeRequest{}, invalidRequest("cannot read a key of the body: " + err.Error())
		}
		if !isMsgpackStr(code) {
			return executeRequest{}, invalidRequest("keys of the body must be strings")
		}
		key, err := dec.DecodeString()
		if err != nil {
			return executeRequest{}, invalidRequest("cannot read a key of the body: " + err.Error())
		}
		switch key {
		case fieldScript:
			code, err := dec.PeekCode()
			if err == nil && !isMsgpackStr(code) {
				return executeRequest{}, invalidRequest(fmt.Sprintf("%q must be a string", key))
			}
			if req.Script, err = dec.DecodeString(); err != nil {
				return executeRequest{}, invalidRequest(fmt.Sprintf("cannot read %q: %v", key, err))
			}
			haveScript = true
		case fieldStdin:
			code, err := dec.PeekCode()
			if err == nil && code == 0xc0 {
				_ = dec.Skip() // nil: absent
				break
			}
			if err == nil && !isMsgpackStr(code) {
				return executeRequest{}, invalidRequest(`"stdin" must be a string`)
			}
			text, err := dec.DecodeString()
			if err != nil {
				return executeRequest{}, invalidRequest(fmt.Sprintf("cannot read %q: %v", key, err))
			}
			req.Stdin = &text
		case fieldInput:
			raw, err := dec.DecodeRaw()
			if err != nil {
				return executeRequest{}, invalidRequest(fmt.Sprintf("cannot read %q: %v", key, err))
			}
			req.Input = raw
		case fieldInputs:
			n, err := dec.DecodeArrayLen()
			if err != nil || n < 0 {
				return executeRequest{}, invalidRequest(`"inputs" must be an array`)
			}
			if n > cfg.MaxBatch {
				return executeRequest{}, batchTooLong(cfg)
			}
			req.Inputs = make([][]byte, 0, n)
			for range n {
				raw, err := dec.DecodeRaw()
				if err != nil {
					return executeRequest{}, invalidRequest(fmt.Sprintf("cannot read %q: %v", key, err))
				}
				req.Inputs = append(req.Inputs, append([]byte(nil), raw...))
			}
		case fieldFiles:
			if req.Files, err = decodeMsgpackFiles(dec, cfg); err != nil {
				return executeRequest{}, err
			}
		case fieldEntrypoint:
			code, err := dec.PeekCode()
			if err == nil && code == 0xc0 {
				err = dec.Skip() // nil: absent
			} else if err == nil && !isMsgpackStr(code) {
				return executeRequest{}, invalidRequest(entrypointInvalid)
			} else if err == nil {
				var text string
				if text, err = dec.DecodeString(); err == nil && text == "" {
					return executeRequest{}, invalidRequest(entrypointInvalid)
				}
				req.Entrypoint = runner.Entrypoint(text)
			}
			if err != nil {
				return executeRequest{}, invalidRequest(fmt.Sprintf("cannot read %q: %v", key, err))
			}
		case fieldRuntime:
			code, err := dec.PeekCode()
			if err == nil && code == 0xc0 {
				err = dec.Skip() // nil: absent
			} else if err == nil && !isMsgpackStr(code) {
				return executeRequest{}, invalidRequest(runtimeInvalid(cfg))
			} else if err == nil {
				var text string
				if text, err = dec.DecodeString(); err == nil && text == "" {
					return executeRequest{}, invalidRequest(runtimeInvalid(cfg))
				}
				req.Runtime = text
			}
			if err != nil {
				return executeRequest{}, invalidRequest(fmt.Sprintf("cannot read %q: %v", key, err))
			}
		case fieldTimeoutMS, fieldMemoryMB:
			// Only scalars reach DecodeInterface: it would allocate for
			// the declared length of an array or a map.
			if code, err := dec.PeekCode(); err == nil && !isMsgpackScalar(code) {
				return executeRequest{}, invalidRequest(fmt.Sprintf("%q must be an integer that fits in 64 bits", key))
			}
			value, err := dec.DecodeInterface()
			if err != nil {
				return executeRequest{}, invalidRequest(fmt.Sprintf("cannot read %q: %v", key, err))
			}
			if value == nil {
				break // absent
			}
			n, ok := msgpackInt(value)
			if !ok {
				return executeRequest{}, invalidRequest(fmt.Sprintf("%q must be an integer that fits in 64 bits", key))
			}
			req.setInt(key, n)
		default:
			return executeRequest{}, unknownField(key)
		}
	}
	if !haveScript {
		return executeRequest{}, invalidRequest(`"script" is required`)
	}
	return req, nil
}

func isMsgpackMap(code byte) bool {
	return code >= 0x80 && code <= 0x8f || code == 0xde || code == 0xdf
}

func isMsgpackBin(code byte) bool { return code >= 0xc4 && code <= 0xc6 }

// isMsgpackScalar says code starts nil, a boolean, an integer or a float.
func isMsgpackScalar(code byte) bool {
	return code <= 0x7f || code >= 0xe0 || code == 0xc0 || code == 0xc2 || code == 0xc3 || code >= 0xca && code <= 0xd3
}

func isMsgpackStr(code byte) bool {
	return code >= 0xa0 && code <= 0xbf || code >= 0xd9 && code <= 0xdb
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

// decodeJSONFiles reads "files" of a JSON body (valid, compact JSON): an
// object of name → standard base64 (with padding), or null for none.
func decodeJSONFiles(value []byte, cfg *Config) ([]runner.File, error) {
	if string(value) == "null" {
		return nil, nil
	}
	if value[0] != '{' {
		return nil, invalidRequest(`"files" must be an object of file name to base64 content`)
	}
	files := []runner.File{}
	for i := 1; value[i] != '}'; {
		if len(files) == cfg.MaxFiles {
			return nil, filesTooMany(cfg)
		}
		nameEnd := skipJSONString(value, i)
		name, err := unquoteJSON(value[i:nameEnd])
		if err != nil {
			return nil, invalidRequest("cannot read a file name: " + err.Error())
		}
		contentEnd := skipJSONValue(value, nameEnd+1)
		content := value[nameEnd+1 : contentEnd]
		if content[0] != '"' {
			return nil, invalidRequest(fmt.Sprintf("file %q: the content must be a base64 string", name))
		}
		text, err := unquoteJSON(content)
		if err != nil {
			return nil, invalidRequest(fmt.Sprintf("file %q: cannot read the content: %v", name, err))
		}
		decoded, err := base64.StdEncoding.Strict().DecodeString(text)
		if err != nil {
			return nil, invalidRequest(fmt.Sprintf("file %q: the content is not standard base64: %v", name, err))
		}
		files = append(files, runner.File{Name: name, Content: decoded})
		i = contentEnd
		if value[i] == ',' {
			i++
		}
	}
	return files, nil
}

// decodeMsgpackFiles reads "files" of a msgpack body: a map of name (str)
// → content (bin, or str for text), or nil for none. Keys were checked
// unique by msgpackcheck.
func decodeMsgpackFiles(dec *msgpack.Decoder, cfg *Config) ([]runner.File, error) {
	code, err := dec.PeekCode()
	if err != nil {
		return nil, invalidRequest(`cannot read "files": ` + err.Error())
	}
	if code == 0xc0 {
		return nil, dec.Skip()
	}
	if !isMsgpackMap(code) {
		return nil, invalidRequest(`"files" must be a map of file name to bin content`)
	}
	n, err := dec.DecodeMapLen()
	if err != nil {
		return nil, invalidRequest(`cannot read "files": ` + err.Error())
	}
	if n > cfg.MaxFiles {
		return nil, filesTooMany(cfg)
	}
	files := make([]runner.File, 0, n)
	for range n {
		if code, err := dec.PeekCode(); err != nil || !isMsgpackStr(code) {
			return nil, invalidRequest(`the file names in "files" must be strings`)
		}
		name, err := dec.DecodeString()
		if err != nil {
			return nil, invalidRequest("cannot read a file name: " + err.Error())
		}
		code, err := dec.PeekCode()
		if err != nil || !(isMsgpackStr(code) || isMsgpackBin(code)) {
			return nil, invalidRequest(fmt.Sprintf("file %q: the content must be bin (or str)", name))
		}
		content, err := dec.DecodeBytes()
		if err != nil {
			return nil, invalidRequest(fmt.Sprintf("file %q: the content must be bin (or str): %v", name, err))
		}
		files = append(files, runner.File{Name: name, Content: content})
	}
	return files, nil
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
		if int64(len(f.Content)) > cfg.MaxFileBytes {
			return &APIError{Type: TypePayloadTooLarge, Status: http.StatusRequestEntityTooLarge,
				Message: fmt.Sprintf(`"files": %q is %d bytes, over the file size limit of %d`, f.Name, len(f.Content), cfg.MaxFileBytes)}
		}
		total += len(f.Content)
	}
	if total > cfg.MaxFilesBytes {
		return &APIError{Type: TypePayloadTooLarge, Status: http.StatusRequestEntityTooLarge,
			Message: fmt.Sprintf(`"files" hold %d bytes together, over the cap of %d`, total, cfg.MaxFilesBytes)}
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
