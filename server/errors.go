package server

import (
	"errors"
	"net/http"

	"github.com/sandbox-exec/pyexec/pool"
	"github.com/sandbox-exec/pyexec/runner"
)

// Error types of the API, the "type" field of an error body.
const (
	TypeInvalidRequest  = "invalid_request"
	TypePayloadTooLarge = "payload_too_large"
	TypeUnauthorized    = "unauthorized"
	TypeOverloaded      = "overloaded"
	TypeInternal        = "internal"
	TypeNotFound        = "not_found"
	TypeMethod          = "method_not_allowed"
	TypeShuttingDown    = "shutting_down"
	// TypeUnsupportedMediaType answers a request body whose Content-Type
	// is neither JSON nor msgpack (415).
	TypeUnsupportedMediaType = "unsupported_media_type"
	// TypeClientGone answers a request whose connection's read side closed
	// while its script ran; the script was killed. A caller that hung up
	// reads nothing, but one that only half-closed (shutdown(SHUT_WR) after
	// its request) cannot be told from it without writing (hangupWatcher),
	// and reads this answer: half-closing is not supported.
	TypeClientGone = "client_gone"
)

// statusClientGone is TypeClientGone's status, nginx's 499 ("client
// closed request"): in the log for a caller that hung up, in the answer a
// half-closed caller reads.
const statusClientGone = 499

// APIError is an error the client is meant to read: its type, message and
// status are safe to show. Anything else becomes "internal".
type APIError struct {
	Type      string
	Status    int
	Message   string
	Retryable bool
}

func (e *APIError) Error() string { return e.Type + ": " + e.Message }

func invalidRequest(msg string) *APIError {
	return &APIError{Type: TypeInvalidRequest, Status: http.StatusBadRequest, Message: msg}
}

// errorBody is the "error" object of an error response.
type errorBody struct {
	Type      string `json:"type" msgpack:"type"`
	Message   string `json:"message" msgpack:"message"`
	Retryable bool   `json:"retryable" msgpack:"retryable"`
	Traceback string `json:"traceback,omitempty" msgpack:"traceback,omitempty"`
	Line      int    `json:"line,omitempty" msgpack:"line,omitempty"`
	Offset    int    `json:"offset,omitempty" msgpack:"offset,omitempty"`
	RequestID string `json:"request_id,omitempty" msgpack:"request_id,omitempty"`
}

// scriptStatus is the status of each failure a script brings on itself:
// 400 when the script is not a runnable program, 422 when it ran and failed.
func scriptStatus(kind runner.Kind) int {
	switch kind {
	case runner.KindSyntaxError, runner.KindMissingMain, runner.KindForbiddenImport, runner.KindForbiddenCall:
		return http.StatusBadRequest
	default:
		return http.StatusUnprocessableEntity
	}
}

// toErrorBody is the one place an error becomes a status and a body. The
// second result says whether the error is the service's fault and must be
// logged with the request id.
func toErrorBody(err error) (int, errorBody, bool) {
	var apiErr *APIError
	var scriptErr *runner.ScriptError
	switch {
	case errors.As(err, &apiErr):
		return apiErr.Status, errorBody{Type: apiErr.Type, Message: apiErr.Message, Retryable: apiErr.Retryable}, false
	case errors.As(err, &scriptErr):
		return scriptStatus(scriptErr.Kind), errorBody{
			Type: string(scriptErr.Kind), Message: scriptErr.Message,
			Traceback: scriptErr.Traceback, Line: scriptErr.Line, Offset: scriptErr.Offset,
		}, false
	case errors.Is(err, pool.ErrOverloaded):
		return http.StatusServiceUnavailable, errorBody{Type: TypeOverloaded, Retryable: true,
			Message: "no sandbox became free in time; retry after the Retry-After delay"}, false
	case errors.Is(err, pool.ErrClosed):
		return http.StatusServiceUnavailable, errorBody{Type: TypeOverloaded, Retryable: true,
			Message: "the service is shutting down"}, false
	default:
		return http.StatusInternalServerError, errorBody{Type: TypeInternal, Retryable: true,
			Message: "the service failed to run the script; it was logged with the request id"}, true
	}
}
