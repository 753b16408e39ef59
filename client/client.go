// Package client is the Go client of pyexec's HTTP API: it runs a script
// through POST /execute and returns its result, output and timing, with
// typed errors and retries of the retryable ones.
//
// It speaks msgpack by default (JSON on request), keeps connections alive
// in a pool, and honours contexts: cancelling a call hangs up, which makes
// the server kill the script.
//
// Example:
//
//	c := client.New("http://127.0.0.1:8080", client.Options{Token: os.Getenv("PYEXEC_AUTH_TOKEN")})
//	var sum int
//	res, err := c.Execute(ctx, client.Request{
//		Script: "def main(xs):\n    return sum(xs)\n",
//		Input:  []int{1, 2, 3},
//	}, &sum)
//	var apiErr *client.Error
//	switch {
//	case errors.As(err, &apiErr) && apiErr.Type == "script_error":
//		fmt.Println("the script failed:", apiErr.Message, apiErr.Traceback)
//	case err != nil:
//		return err
//	}
//	fmt.Println(sum, res.Stdout, res.Usage.CPUMS, res.RequestID)
//
// A batch runs main once per input in one sandbox:
//
//	res, err := c.Execute(ctx, client.Request{Script: script, Inputs: []any{1, 2, 3}}, nil)
//	for _, item := range res.Results {
//		var v int
//		if item.Err != nil { ... } else if err := item.Decode(&v); err != nil { ... }
//	}
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Options configure a Client. Zero fields take the defaults listed.
type Options struct {
	// Token is sent as "Authorization: Bearer <token>" when set.
	Token string
	// JSON makes the client speak JSON instead of msgpack.
	JSON bool
	// MaxRetries bounds how often a retryable failure (overloaded,
	// shutting_down, internal, a transport error) is retried. Zero: 3;
	// negative: never.
	MaxRetries int
	// RetryBase is the first back-off; it doubles each time, with jitter,
	// and a server's Retry-After is honoured when longer. Zero: 100 ms.
	RetryBase time.Duration
	// HTTPClient is used for the requests. Zero: one with a keep-alive
	// pool of 64 connections per host and no overall timeout (the
	// context bounds each call).
	HTTPClient *http.Client
}

// Client calls one pyexec server. It is safe for concurrent use.
type Client struct {
	url  string
	opts Options
	http *http.Client
}

// New returns a client of the server at baseURL (e.g. http://host:8080).
func New(baseURL string, opts Options) *Client {
	if opts.MaxRetries == 0 {
		opts.MaxRetries = 3
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = 100 * time.Millisecond
	}
	hc := opts.HTTPClient
	if hc == nil {
		transport := http.DefaultTransport.(*http.Transport).Clone()
		transport.MaxIdleConnsPerHost = 64
		hc = &http.Client{Transport: transport}
	}
	return &Client{url: strings.TrimRight(baseURL, "/"), opts: opts, http: hc}
}

// Request is one script to run.
type Request struct {
	Script string
	// Entrypoint is "" or "main" (call main, the default) or "none": run
	// the script as written, as a notebook cell, with the input in the
	// global INPUT; the value of its last expression is the result.
	Entrypoint string
	// Runtime names the runtime to run in (one of /health's runtimes);
	// "": the server's default.
	Runtime string
	// Input, when not nil, is passed to main(input). Over msgpack, []byte
	// arrives as bytes and integers stay exact.
	Input any
	// HasInput calls main(None) when Input is nil.
	HasInput bool
	// Timeout and MemoryMB, when positive, lower the server's limits.
	// MemoryMB is what the script may use on top of what its sandbox
	// holds when it starts; the server refuses less than 16.
	Timeout  time.Duration
	MemoryMB int
	// Files are placed in the sandbox's working directory (/tmp) before
	// main runs: name (relative) → content.
	Files map[string][]byte
	// Stdin, when not nil, is what the script reads from sys.stdin
	// (input()); each input of a batch reads it from its start. Without
	// it, a read raises EOFError saying no stdin was given.
	Stdin *string
	// Inputs, when not nil, makes the request a batch: main is called once
	// per element, in one sandbox, and Result.Results has one item per
	// input. Input and HasInput must then be unset.
	Inputs []any
	// RequestID is sent as X-Request-Id (at most 64 printable ASCII
	// characters; the server replaces anything else with an id of its
	// own). Every attempt of one call carries it, so the server's log
	// ties retries together. Empty: the server gives each attempt one.
	RequestID string
}

// File is one file the script left in /tmp/output.
type File struct {
	Content   []byte `json:"content" msgpack:"content"`
	Size      int    `json:"size" msgpack:"size"`
	MediaType string `json:"media_type" msgpack:"media_type"`
}

// Timing is the server's breakdown of one execution, in milliseconds.
type Timing struct {
	QueueMS float64 `json:"queue_ms" msgpack:"queue_ms"`
	ExecMS  float64 `json:"exec_ms" msgpack:"exec_ms"`
	TotalMS float64 `json:"total_ms" msgpack:"total_ms"`
}

// Usage is what the sandbox used, as the kernel counted it.
type Usage struct {
	CPUMS    float64 `json:"cpu_ms" msgpack:"cpu_ms"`
	MaxRSSKB int64   `json:"max_rss_kb" msgpack:"max_rss_kb"`
}

// Result is a successful execution: what main returned is decoded into
// the value given to Execute; its raw form is Raw.
type Result struct {
	// Stdout and Stderr are what the script printed (for a batch, outside
	// the calls of main, e.g. at import).
	Stdout, Stderr string
	Timing         Timing
	Usage          Usage
	// Raw is the result as the server sent it (JSON or msgpack bytes); nil
	// for a batch. Bytes the script returned are bin over msgpack (decode
	// them into a []byte), base64 text over JSON.
	Raw []byte
	// Results are a batch's outcomes, one per input in order (nil when
	// the request was not a batch).
	Results []BatchItem
	// Files are what the script left in /tmp/output, by name relative to
	// it (nil when none).
	Files map[string]File
	// RequestID is the server's id of the request (X-Request-Id): the one
	// sent, or the one it gave. Its log lines carry it.
	RequestID string
	// Attempts is how many requests the call took (1 without retries).
	Attempts int
}

// BatchItem is one input's outcome in a batch: its result or its error,
// and what main printed for it.
type BatchItem struct {
	// Raw is what main returned (JSON or msgpack bytes); nil when Err is set.
	Raw []byte
	// Err is the error of this input (script_error, timeout, ...); the
	// other inputs' outcomes stand. Status is 0: the answer was 200.
	Err            *Error
	Stdout, Stderr string
	msgpack        bool
}

// Decode decodes what main returned for this input into out.
func (b BatchItem) Decode(out any) error {
	if b.Err != nil {
		return b.Err
	}
	return decodeRaw(b.Raw, b.msgpack, out)
}

func decodeRaw(raw []byte, asMsgpack bool, out any) error {
	// An absent result is None: the server may leave a null out.
	if len(raw) == 0 && asMsgpack {
		raw = []byte{0xc0}
	} else if len(raw) == 0 {
		raw = []byte("null")
	}
	var err error
	if asMsgpack {
		err = msgpack.Unmarshal(raw, out)
	} else {
		err = json.Unmarshal(raw, out)
	}
	if err != nil {
		return fmt.Errorf("pyexec: cannot decode the result into %T: %w", out, err)
	}
	return nil
}

// Error is a failure the server reported: its error type (script_error,
// timeout, overloaded, ...; see the table in docs/api.md), message and status.
// What the script printed before it failed is in Stdout and Stderr.
type Error struct {
	Status    int
	Type      string
	Message   string
	Traceback string
	Line      int
	Offset    int
	Stdout    string
	Stderr    string
	// Truncated says Stdout or Stderr were cut to keep the answer within
	// the server's --max-answer-bytes.
	Truncated bool
	// RequestID is the server's id of the request; quote it when
	// reporting an internal error (the server logged it with this id).
	RequestID string
	// Timing and Usage are set when the script ran before it failed.
	Timing    *Timing
	Usage     *Usage
	retryable bool
	// retryAfter is the server's Retry-After, when it sent one.
	retryAfter time.Duration
}

func (e *Error) Error() string { return fmt.Sprintf("pyexec: %d %s: %s", e.Status, e.Type, e.Message) }

// Retryable says whether the same request may succeed if sent again.
func (e *Error) Retryable() bool { return e.retryable }

// errorFields is the server's "error" object.
type errorFields struct {
	Type      string `json:"type" msgpack:"type"`
	Message   string `json:"message" msgpack:"message"`
	Retryable bool   `json:"retryable" msgpack:"retryable"`
	Traceback string `json:"traceback" msgpack:"traceback"`
	Line      int    `json:"line" msgpack:"line"`
	Offset    int    `json:"offset" msgpack:"offset"`
	RequestID string `json:"request_id" msgpack:"request_id"`
}

func (f *errorFields) toError(status int) *Error {
	return &Error{Status: status, Type: f.Type, Message: f.Message, Traceback: f.Traceback, Line: f.Line,
		Offset: f.Offset, RequestID: f.RequestID, retryable: f.Retryable}
}

// errorBody is the server's error answer.
type errorBody struct {
	Error  errorFields `json:"error" msgpack:"error"`
	Stdout string      `json:"stdout" msgpack:"stdout"`
	Stderr string      `json:"stderr" msgpack:"stderr"`
	// Truncated: stdout or stderr were cut to fit --max-answer-bytes.
	Truncated bool    `json:"truncated" msgpack:"truncated"`
	Timing    *Timing `json:"timing" msgpack:"timing"`
	Usage     *Usage  `json:"usage" msgpack:"usage"`
}

// answer is a success, a single run's or a batch's; raw values stay
// undecoded (json.RawMessage or msgpack.RawMessage, as R says).
type answer[R any] struct {
	Result  R               `json:"result" msgpack:"result"`
	Results []answerItem[R] `json:"results" msgpack:"results"`
	Stdout  string          `json:"stdout" msgpack:"stdout"`
	Stderr  string          `json:"stderr" msgpack:"stderr"`
	Files   map[string]File `json:"files" msgpack:"files"`
	Timing  Timing          `json:"timing" msgpack:"timing"`
	Usage   Usage           `json:"usage" msgpack:"usage"`
}

type answerItem[R any] struct {
	Result R            `json:"result" msgpack:"result"`
	Error  *errorFields `json:"error" msgpack:"error"`
	Stdout string       `json:"stdout" msgpack:"stdout"`
	Stderr string       `json:"stderr" msgpack:"stderr"`
}

// toResult turns a decoded answer into a Result; raw gives each raw
// value's bytes.
func toResult[R any](a *answer[R], raw func(R) []byte, asMsgpack bool) *Result {
	res := &Result{Raw: raw(a.Result), Stdout: a.Stdout, Stderr: a.Stderr, Files: a.Files, Timing: a.Timing, Usage: a.Usage}
	if a.Results != nil {
		res.Raw = nil
		res.Results = make([]BatchItem, len(a.Results))
		for i, item := range a.Results {
			res.Results[i] = BatchItem{Raw: raw(item.Result), Stdout: item.Stdout, Stderr: item.Stderr, msgpack: asMsgpack}
			if item.Error != nil {
				res.Results[i].Raw = nil
				res.Results[i].Err = item.Error.toError(0)
				res.Results[i].Err.Stdout, res.Results[i].Err.Stderr = item.Stdout, item.Stderr
			}
		}
	}
	return res
}

// Execute runs req and decodes what main returned into out (a pointer, or
// nil to keep only Result.Raw). Retryable failures are retried with
// back-off and jitter, up to Options.MaxRetries, within ctx.
func (c *Client) Execute(ctx context.Context, req Request, out any) (*Result, error) {
	if req.Inputs != nil && (req.Input != nil || req.HasInput) {
		return nil, errors.New("pyexec: a request has Input or Inputs, not both")
	}
	body, contentType, err := c.encode(req)
	if err != nil {
		return nil, err
	}
	delay := c.opts.RetryBase
	for attempt := 1; ; attempt++ {
		res, err := c.once(ctx, body, contentType, req.RequestID, out)
		if err == nil {
			res.Attempts = attempt
			return res, nil
		}
		wait, retry := c.shouldRetry(ctx, err, attempt, delay)
		if !retry {
			return nil, err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, fmt.Errorf("pyexec: gave up retrying: %w (last: %w)", ctx.Err(), err)
		}
		delay *= 2
	}
}

// shouldRetry decides about one failed attempt: how long to wait, and
// whether to try again at all.
func (c *Client) shouldRetry(ctx context.Context, err error, attempt int, delay time.Duration) (time.Duration, bool) {
	if ctx.Err() != nil || c.opts.MaxRetries < 0 || attempt > c.opts.MaxRetries {
		return 0, false
	}
	var apiErr *Error
	if errors.As(err, &apiErr) && !apiErr.Retryable() {
		return 0, false
	}
	// Full jitter: a random wait up to the back-off, so clients that
	// failed together do not come back together.
	wait := time.Duration(rand.Int64N(int64(delay)) + 1)
	if apiErr != nil && apiErr.retryAfter > wait {
		wait = apiErr.retryAfter
	}
	return wait, true
}

func (c *Client) encode(req Request) ([]byte, string, error) {
	fields := map[string]any{"script": req.Script}
	if req.Entrypoint != "" {
		fields["entrypoint"] = req.Entrypoint
	}
	if req.Runtime != "" {
		fields["runtime"] = req.Runtime
	}
	if req.Input != nil || req.HasInput {
		fields["input"] = req.Input
	}
	if req.Inputs != nil {
		fields["inputs"] = req.Inputs
	}
	if req.Timeout > 0 {
		fields["timeout_ms"] = req.Timeout.Milliseconds()
	}
	if req.MemoryMB > 0 {
		fields["memory_mb"] = req.MemoryMB
	}
	if req.Files != nil {
		// []byte is base64 in JSON and bin in msgpack, as the API wants.
		fields["files"] = req.Files
	}
	if req.Stdin != nil {
		fields["stdin"] = *req.Stdin
	}
	if c.opts.JSON {
		b, err := json.Marshal(fields)
		return b, "application/json", err
	}
	b, err := msgpack.Marshal(fields)
	return b, "application/msgpack", err
}

// once sends one request.
func (c *Client) once(ctx context.Context, body []byte, contentType, requestID string, out any) (*Result, error) {
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+"/execute", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("pyexec: cannot build the request: %w", err)
	}
	httpReq.Header.Set("Content-Type", contentType)
	if c.opts.Token != "" {
		httpReq.Header.Set("Authorization", "Bearer "+c.opts.Token)
	}
	if requestID != "" {
		httpReq.Header.Set("X-Request-Id", requestID)
	}
	resp, err := c.http.Do(httpReq)
	if err != nil {
		return nil, fmt.Errorf("pyexec: request failed: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("pyexec: cannot read the answer: %w", err)
	}
	gotID := resp.Header.Get("X-Request-Id")
	mediaType, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	mediaType = strings.TrimSpace(mediaType)
	asMsgpack := mediaType == "application/msgpack" || mediaType == "application/vnd.msgpack"
	decode := func(v any) error {
		if asMsgpack {
			return msgpack.Unmarshal(raw, v)
		}
		return json.Unmarshal(raw, v)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if err := decode(&eb); err != nil || eb.Error.Type == "" {
			return nil, &Error{Status: resp.StatusCode, Type: "http", Message: strings.TrimSpace(string(raw)),
				RequestID: gotID, retryable: resp.StatusCode >= 500}
		}
		e := eb.Error.toError(resp.StatusCode)
		e.Stdout, e.Stderr, e.Timing, e.Usage, e.Truncated = eb.Stdout, eb.Stderr, eb.Timing, eb.Usage, eb.Truncated
		if gotID != "" {
			e.RequestID = gotID
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			e.retryAfter = time.Duration(s) * time.Second
		}
		return nil, e
	}
	var res *Result
	if asMsgpack {
		var a answer[msgpack.RawMessage]
		if err := msgpack.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("pyexec: cannot decode the answer: %w", err)
		}
		res = toResult(&a, func(r msgpack.RawMessage) []byte { return r }, true)
	} else {
		var a answer[json.RawMessage]
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("pyexec: cannot decode the answer: %w", err)
		}
		res = toResult(&a, func(r json.RawMessage) []byte { return r }, false)
	}
	res.RequestID = gotID
	if out != nil && res.Results == nil {
		if err := decodeRaw(res.Raw, asMsgpack, out); err != nil {
			return res, err
		}
	}
	return res, nil
}
