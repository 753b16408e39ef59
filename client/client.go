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
//	fmt.Println(sum, res.Stdout)
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

// Result is a successful execution: what main returned is decoded into
// the value given to Execute; its raw form is Raw.
type Result struct {
	Stdout, Stderr string
	Timing         Timing
	// Raw is the result as the server sent it (JSON or msgpack bytes).
	Raw []byte
	// Files are what the script left in /tmp/output, by name relative to
	// it (nil when none).
	Files map[string]File
	// Attempts is how many requests the call took (1 without retries).
	Attempts int
}

// Error is a failure the server reported: its error type (script_error,
// timeout, overloaded, ...; see the README's table), message and status.
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
	retryable bool
	// retryAfter is the server's Retry-After, when it sent one.
	retryAfter time.Duration
}

func (e *Error) Error() string { return fmt.Sprintf("pyexec: %d %s: %s", e.Status, e.Type, e.Message) }

// Retryable says whether the same request may succeed if sent again.
func (e *Error) Retryable() bool { return e.retryable }

// errorBody is the server's error shape.
type errorBody struct {
	Error struct {
		Type      string `json:"type" msgpack:"type"`
		Message   string `json:"message" msgpack:"message"`
		Retryable bool   `json:"retryable" msgpack:"retryable"`
		Traceback string `json:"traceback" msgpack:"traceback"`
		Line      int    `json:"line" msgpack:"line"`
		Offset    int    `json:"offset" msgpack:"offset"`
	} `json:"error" msgpack:"error"`
	Stdout string `json:"stdout" msgpack:"stdout"`
	Stderr string `json:"stderr" msgpack:"stderr"`
}

// Execute runs req and decodes what main returned into out (a pointer, or
// nil to keep only Result.Raw). Retryable failures are retried with
// back-off and jitter, up to Options.MaxRetries, within ctx.
func (c *Client) Execute(ctx context.Context, req Request, out any) (*Result, error) {
	body, contentType, err := c.encode(req)
	if err != nil {
		return nil, err
	}
	delay := c.opts.RetryBase
	for attempt := 1; ; attempt++ {
		res, err := c.once(ctx, body, contentType, out)
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
	if req.Input != nil || req.HasInput {
		fields["input"] = req.Input
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
	if c.opts.JSON {
		b, err := json.Marshal(fields)
		return b, "application/json", err
	}
	b, err := msgpack.Marshal(fields)
	return b, "application/msgpack", err
}

// once sends one request.
func (c *Client) once(ctx context.Context, body []byte, contentType string, out any) (*Result, error) {
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+"/execute", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("pyexec: cannot build the request: %w", err)
	}
	httpReq.Header.Set("Content-Type", contentType)
	if c.opts.Token != "" {
		httpReq.Header.Set("Authorization", "Bearer "+c.opts.Token)
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
	asMsgpack := strings.HasPrefix(resp.Header.Get("Content-Type"), "application/msgpack")
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
				retryable: resp.StatusCode >= 500}
		}
		e := &Error{Status: resp.StatusCode, Type: eb.Error.Type, Message: eb.Error.Message, Traceback: eb.Error.Traceback,
			Line: eb.Error.Line, Offset: eb.Error.Offset, Stdout: eb.Stdout, Stderr: eb.Stderr, retryable: eb.Error.Retryable}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			e.retryAfter = time.Duration(s) * time.Second
		}
		return nil, e
	}
	res := &Result{}
	if asMsgpack {
		var answer struct {
			Result msgpack.RawMessage `msgpack:"result"`
			Stdout string             `msgpack:"stdout"`
			Stderr string             `msgpack:"stderr"`
			Files  map[string]File    `msgpack:"files"`
			Timing Timing             `msgpack:"timing"`
		}
		if err := msgpack.Unmarshal(raw, &answer); err != nil {
			return nil, fmt.Errorf("pyexec: cannot decode the answer: %w", err)
		}
		res.Raw, res.Stdout, res.Stderr, res.Timing = answer.Result, answer.Stdout, answer.Stderr, answer.Timing
		res.Files = answer.Files
		if out != nil {
			if err := msgpack.Unmarshal(answer.Result, out); err != nil {
				return res, fmt.Errorf("pyexec: cannot decode the result into %T: %w", out, err)
			}
		}
		return res, nil
	}
	var answer struct {
		Result json.RawMessage `json:"result"`
		Stdout string          `json:"stdout"`
		Stderr string          `json:"stderr"`
		Files  map[string]File `json:"files"`
		Timing Timing          `json:"timing"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return nil, fmt.Errorf("pyexec: cannot decode the answer: %w", err)
	}
	res.Raw, res.Stdout, res.Stderr, res.Timing = answer.Result, answer.Stdout, answer.Stderr, answer.Timing
	res.Files = answer.Files
	if out != nil {
		if err := json.Unmarshal(answer.Result, out); err != nil {
			return res, fmt.Errorf("pyexec: cannot decode the result into %T: %w", out, err)
		}
	}
	return res, nil
}
