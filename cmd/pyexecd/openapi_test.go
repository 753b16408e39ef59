package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// describedStatusOnly makes a status the description does not list a
// fault (kin-openapi lets it pass by default).
var describedStatusOnly = &openapi3filter.Options{IncludeResponseStatus: true}

// TestOpenAPI checks real answers of every endpoint, and of every error
// type the tests can bring about, against api/openapi.yaml.
func TestOpenAPI(t *testing.T) {
	ctx := context.Background()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(ctx); err != nil {
		t.Fatalf("the description itself: %v", err)
	}
	s := startServer(t, "tok", "--mode", "fork", "--warm", "2", "--policy", "seed", "--max-busy", "1",
		"--acquire-timeout", "300ms", "--max-output-bytes", "1000", "--max-script-bytes", "100000", "--max-body-bytes", "200000")
	doc.Servers = openapi3.Servers{{URL: s.url}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, req *http.Request, wantStatus int, wantType string) {
		t.Helper()
		var body []byte
		if req.Body != nil {
			body, _ = io.ReadAll(req.Body)
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
		if req.URL.Path == "/execute" && wantType != "overloaded" {
			// The 300 ms acquire timeout is for the overloaded case; on a
			// busy machine a refill can take longer, so every other case
			// starts with a sandbox idle and the running slot free.
			s.waitFor(t, func(busy int) bool {
				p, ok := s.poolFigures()
				return ok && busy == 0 && p.Idle > 0
			})
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != wantStatus {
			t.Errorf("%s: status %d, want %d: %s", name, resp.StatusCode, wantStatus, raw)
			return
		}
		if wantType != "" {
			var e struct{ Error struct{ Type string } }
			_ = json.Unmarshal(raw, &e)
			if e.Error.Type != wantType {
				t.Errorf("%s: error type %q, want %q", name, e.Error.Type, wantType)
			}
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		route, params, err := router.FindRoute(req)
		if err != nil {
			// Paths and methods the description does not have answer the
			// error shape all the same.
			var v any
			if jerr := json.Unmarshal(raw, &v); jerr != nil {
				t.Errorf("%s: %v", name, jerr)
			} else if verr := doc.Components.Schemas["ErrorResponse"].Value.VisitJSON(v); verr != nil {
				t.Errorf("%s: the answer is not an ErrorResponse: %v", name, verr)
			}
			return
		}
		input := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: input, Status: resp.StatusCode,
			Header: resp.Header, Body: io.NopCloser(bytes.NewReader(raw)), Options: describedStatusOnly}
		if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
			t.Errorf("%s: the answer does not match the description: %v\n%s", name, err, raw)
		}
	}
	execute := func(fields map[string]any) *http.Request {
		body, _ := json.Marshal(fields)
		req, _ := http.NewRequest(http.MethodPost, s.url+"/execute", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer tok")
		return req
	}
	get := func(path string, token bool) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, s.url+path, nil)
		if token {
			req.Header.Set("Authorization", "Bearer tok")
		}
		return req
	}
	script := func(src string) map[string]any { return map[string]any{"script": src} }

	check("hello", execute(script(helloScript)), 200, "")
	check("batch", execute(map[string]any{"script": "def main(x):\n    return 1 // x\n", "inputs": []int{1, 0}}), 200, "")
	check("batch cut short", execute(map[string]any{"script": "import os\ndef main(x):\n    if x == 2:\n        os._exit(1)\n    return x\n", "inputs": []int{1, 2, 3}}), 200, "")
	check("cell", execute(map[string]any{"script": "1 + 1\n", "entrypoint": "none"}), 200, "")
	check("figures", execute(map[string]any{"script": "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\n", "entrypoint": "none"}), 200, "")
	check("health", get("/health", false), 200, "")
	check("ready", get("/ready", false), 200, "")
	check("live", get("/live", false), 200, "")
	check("metrics", get("/metrics", true), 200, "")
	check("metrics without token", get("/metrics", false), 401, "unauthorized")
	check("not found", get("/nope", false), 404, "not_found")
	check("method", get("/execute", true), 405, "method_not_allowed")
	check("stdin", execute(map[string]any{"script": "def main():\n    return input()\n", "stdin": "x\n"}), 200, "")
	check("labelled frame", execute(script("import pandas as pd\ndef main():\n    return pd.DataFrame({'a': [1]}, index=['r'])\n")), 200, "")
	check("nul byte", execute(script("def main():\n    return '\x00'\n")), 400, "syntax_error")
	xml := execute(script(helloScript))
	xml.Header.Set("Content-Type", "application/xml")
	check("unsupported media type", xml, 415, "unsupported_media_type")
	check("invalid_request", execute(map[string]any{"script": "x", "SCRIPT": "y"}), 400, "invalid_request")
	check("payload_too_large", execute(script(string(bytes.Repeat([]byte("#"), 150000)))), 413, "payload_too_large")
	check("syntax_error", execute(script("def main(:\n")), 400, "syntax_error")
	check("missing_main", execute(script("x = 1\n")), 400, "missing_main")
	check("forbidden_import", execute(script("import socket\ndef main(): pass\n")), 400, "forbidden_import")
	check("forbidden_call", execute(script("def main():\n    return eval('1')\n")), 400, "forbidden_call")
	check("script_error", execute(script("def main():\n    raise ValueError('x')\n")), 422, "script_error")
	check("result_not_serializable", execute(script("def main():\n    return complex(1, 2)\n")), 422, "result_not_serializable")
	check("timeout", execute(map[string]any{"script": "import time\ndef main():\n    time.sleep(5)\n", "timeout_ms": 200}), 422, "timeout")
	check("memory_limit", execute(map[string]any{"script": "def main():\n    return len(bytearray(400 << 20))\n", "memory_mb": 300}), 422, "memory_limit")
	check("output_limit", execute(script("def main():\n    print('x' * 5000)\n")), 422, "output_limit")
	check("files", execute(map[string]any{"script": "from pathlib import Path\ndef main():\n    Path('output/out.csv').write_text(Path('in.csv').read_text())\n",
		"files": map[string]string{"in.csv": "YSxiCg=="}}), 200, "")
	check("batch with files", execute(map[string]any{"script": "from pathlib import Path\ndef main(x):\n    Path('output/%d' % x).write_text('x')\n", "inputs": []int{1}}), 200, "")
	check("output_files_limit", execute(script("from pathlib import Path\ndef main():\n    for i in range(40):\n        Path('output/%d' % i).write_text('x')\n")), 422, "output_files_limit")
	check("output_files_invalid", execute(script("from pathlib import Path\ndef main():\n    Path('output/a\\tb').write_text('x')\n")), 422, "output_files_invalid")
	check("sandbox_crashed", execute(script("import ctypes\ndef main():\n    ctypes.string_at(0)\n")), 422, "sandbox_crashed")
	check("protocol_error", execute(script("import os, struct\ndef main():\n    os.write(4, struct.pack('>I', 2) + b'\\xc1\\xc1')\n    import time; time.sleep(5)\n")), 422, "protocol_error")
	check("unauthorized", func() *http.Request { r := execute(script(helloScript)); r.Header.Del("Authorization"); return r }(), 401, "unauthorized")

	// client_gone: a client that half-closes its connection after the
	// request reads it (TestHalfClosedClientGets499).
	s.waitFor(t, func(busy int) bool { p, ok := s.poolFigures(); return ok && busy == 0 && p.Idle > 0 })
	slow := script("import time\ndef main():\n    time.sleep(5)\n")
	status, header, raw := halfCloseExecute(t, s.url, "tok", slow["script"].(string))
	var gone struct{ Error struct{ Type string } }
	if err := json.Unmarshal(raw, &gone); err != nil || status != 499 || gone.Error.Type != "client_gone" {
		t.Errorf("half-closed: status %d, %s", status, raw)
	}
	goneReq := execute(slow)
	route, params, err := router.FindRoute(goneReq)
	if err != nil {
		t.Fatal(err)
	}
	goneIn := &openapi3filter.RequestValidationInput{Request: goneReq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if err := openapi3filter.ValidateResponse(ctx, &openapi3filter.ResponseValidationInput{RequestValidationInput: goneIn,
		Status: status, Header: header, Body: io.NopCloser(bytes.NewReader(raw)), Options: describedStatusOnly}); err != nil {
		t.Errorf("client_gone: the answer does not match the description: %v\n%s", err, raw)
	}

	// overloaded: the one running slot is held by a slow script.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.execute(t, "import time\ndef main():\n    time.sleep(1.5)\n", nil)
	}()
	s.waitFor(t, func(busy int) bool { return busy == 1 })
	check("overloaded", execute(script(helloScript)), 503, "overloaded")
	check("ready under load", get("/ready", false), 200, "")
	wg.Wait()
	s.waitFor(t, func(busy int) bool { return busy == 0 })
}
