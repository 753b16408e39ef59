package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/sandbox-exec/pyexec/internal/msgpackcheck"
)

// executeRequest is the body of POST /execute.
type executeRequest struct {
	Script string
	// Input is the JSON text of the "input" field; nil when absent.
	Input     []byte
	TimeoutMS *int64
	MemoryMB  *int64
}

// jsonRequest mirrors the JSON body; pointers tell absent from zero.
type jsonRequest struct {
	Script    *string         `json:"script"`
	Input     json.RawMessage `json:"input"`
	TimeoutMS *int64          `json:"timeout_ms"`
	MemoryMB  *int64          `json:"memory_mb"`
}

// decodeJSON parses a JSON body strictly: one object, known fields only.
func decodeJSON(body []byte) (executeRequest, error) {
	var raw jsonRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return executeRequest{}, invalidRequest("body is not a valid JSON request: " + err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return executeRequest{}, invalidRequest("body has data after the JSON object")
	}
	if raw.Script == nil {
		return executeRequest{}, invalidRequest(`"script" is required`)
	}
	req := executeRequest{Script: *raw.Script, TimeoutMS: raw.TimeoutMS, MemoryMB: raw.MemoryMB}
	if raw.Input != nil {
		req.Input = append([]byte(nil), raw.Input...)
	}
	return req, nil
}

// maxInputDepth bounds the nesting of a msgpack body.
const maxInputDepth = 512

// decodeMsgpack parses a msgpack body: a map with the same keys as JSON.
// "input" must be representable as JSON (maps with string keys, arrays,
// strings, numbers, booleans, nil).
func decodeMsgpack(body []byte) (executeRequest, error) {
	if err := msgpackcheck.Check(body, maxInputDepth); err != nil {
		return executeRequest{}, invalidRequest("body is not a valid msgpack request: " + err.Error())
	}
	dec := msgpack.NewDecoder(bytes.NewReader(body))
	fields, err := dec.DecodeMap()
	if err != nil {
		return executeRequest{}, invalidRequest("body is not a valid msgpack map: " + err.Error())
	}
	var req executeRequest
	for key, value := range fields {
		switch key {
		case "script":
			script, ok := value.(string)
			if !ok {
				return executeRequest{}, invalidRequest(`"script" must be a string`)
			}
			req.Script = script
		case "input":
			input, err := json.Marshal(value)
			if err != nil {
				return executeRequest{}, invalidRequest(`"input" cannot be represented as JSON: ` + err.Error())
			}
			req.Input = input
		case "timeout_ms", "memory_mb":
			n, ok := msgpackInt(value)
			if !ok {
				return executeRequest{}, invalidRequest(fmt.Sprintf("%q must be an integer", key))
			}
			if key == "timeout_ms" {
				req.TimeoutMS = &n
			} else {
				req.MemoryMB = &n
			}
		default:
			return executeRequest{}, invalidRequest(fmt.Sprintf("unknown field %q", key))
		}
	}
	if _, ok := fields["script"]; !ok {
		return executeRequest{}, invalidRequest(`"script" is required`)
	}
	return req, nil
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

// validate checks the envelope against the server's limits.
func (req *executeRequest) validate(cfg *Config) error {
	if req.Script == "" {
		return invalidRequest(`"script" must not be empty`)
	}
	if !utf8.ValidString(req.Script) {
		return invalidRequest(`"script" must be UTF-8`)
	}
	if len(req.Script) > cfg.MaxScriptBytes {
		return &APIError{Type: TypePayloadTooLarge, Status: 413,
			Message: fmt.Sprintf(`"script" is %d bytes, over the cap of %d`, len(req.Script), cfg.MaxScriptBytes)}
	}
	if req.TimeoutMS != nil {
		maxMS := cfg.MaxTimeout.Milliseconds()
		if *req.TimeoutMS < 1 || *req.TimeoutMS > maxMS {
			return invalidRequest(fmt.Sprintf(`"timeout_ms" must be between 1 and %d`, maxMS))
		}
	}
	if req.MemoryMB != nil {
		if *req.MemoryMB < 1 || *req.MemoryMB > cfg.MaxMemoryMB {
			return invalidRequest(fmt.Sprintf(`"memory_mb" must be between 1 and %d`, cfg.MaxMemoryMB))
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
