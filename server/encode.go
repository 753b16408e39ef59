package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sandbox-exec/pyexec/runner"
)

// timingBody is the time breakdown of a response, in milliseconds.
type timingBody struct {
	QueueMS float64 `json:"queue_ms" msgpack:"queue_ms"`
	ExecMS  float64 `json:"exec_ms" msgpack:"exec_ms"`
	TotalMS float64 `json:"total_ms" msgpack:"total_ms"`
}

// usageBody is what the sandbox used, from the kernel.
type usageBody struct {
	CPUMS    float64 `json:"cpu_ms" msgpack:"cpu_ms"`
	MaxRSSKB int64   `json:"max_rss_kb" msgpack:"max_rss_kb"`
}

func usageOf(out runner.Output) usageBody {
	return usageBody{CPUMS: millis(out.Usage.CPU), MaxRSSKB: out.Usage.MaxRSSKB}
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// marshalJSON encodes v compactly and without HTML escaping: a result of
// eight million "<" stays eight million bytes, not forty-eight. (The
// result itself arrives as strict, compact JSON checked by the runner.)
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Media types of a request body. A body without a Content-Type is JSON,
// as are curl's default for -d (application/x-www-form-urlencoded: the
// body is still parsed as strict JSON, so a real form is invalid_request)
// and any "+json" type; anything else is unsupported_media_type.
var (
	msgpackTypes = [][]byte{[]byte("application/msgpack"), []byte("application/vnd.msgpack"), []byte("application/x-msgpack")}
	jsonTypes    = [][]byte{[]byte(""), []byte("application/json"), []byte("application/x-www-form-urlencoded")}
)

// bodyMediaType is contentType without its parameters, lower-cased.
func bodyMediaType(contentType []byte) []byte {
	ct, _, _ := bytes.Cut(contentType, []byte(";"))
	return bytes.ToLower(bytes.TrimSpace(ct))
}

func isMsgpack(contentType []byte) bool {
	ct := bodyMediaType(contentType)
	for _, t := range msgpackTypes {
		if bytes.Equal(ct, t) {
			return true
		}
	}
	return false
}

// msgpackAnswerType is the media type of a msgpack answer: the one the
// request was sent as when that was application/vnd.msgpack (the
// registered name), else application/msgpack.
func msgpackAnswerType(ctx *fasthttp.RequestCtx) string {
	if bytes.Equal(bodyMediaType(ctx.Request.Header.ContentType()), []byte("application/vnd.msgpack")) {
		return "application/vnd.msgpack"
	}
	return "application/msgpack"
}

// bodyFormat says whether a request body of contentType is msgpack (else
// JSON), or refuses the type with 415.
func bodyFormat(contentType []byte) (asMsgpack bool, err error) {
	if isMsgpack(contentType) {
		return true, nil
	}
	ct := bodyMediaType(contentType)
	if bytes.HasPrefix(ct, []byte("application/")) && bytes.HasSuffix(ct, []byte("+json")) {
		return false, nil
	}
	for _, t := range jsonTypes {
		if bytes.Equal(ct, t) {
			return false, nil
		}
	}
	return false, &APIError{Type: TypeUnsupportedMediaType, Status: http.StatusUnsupportedMediaType,
		Message: fmt.Sprintf("Content-Type %q is not supported; send application/json or application/msgpack (also application/vnd.msgpack)",
			clipText(string(contentType), 100))}
}

// clipText bounds a text a client sent before an answer quotes it.
func clipText(text string, n int) string {
	if len(text) <= n {
		return text
	}
	return text[:n] + "…"
}
