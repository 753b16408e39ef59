package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/vmihailenco/msgpack/v5"
)

// oapiCodegen and oapiRuntime are pinned: the generator from the module
// proxy, and the runtime its code imports.
const (
	oapiCodegen = "github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2"
	oapiRuntime = "github.com/oapi-codegen/runtime@v1.9.0"
)

// codegenProgram uses the generated client as a caller would: a script's
// result, a typed error, and /health, through the *WithResponse methods.
const codegenProgram = `package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"

	"pyexecapitest/pyexecapi"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	auth := func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+os.Getenv("PYEXEC_TOKEN"))
		return nil
	}
	c, err := pyexecapi.NewClientWithResponses(os.Getenv("PYEXEC_URL"), pyexecapi.WithRequestEditorFn(auth))
	if err != nil {
		return err
	}
	var input interface{} = []int{1, 2, 3}
	r, err := c.ExecuteWithResponse(ctx, pyexecapi.ExecuteRequest{Script: "def main(xs):\n    print('hi')\n    return sum(xs)\n", Input: &input})
	if err != nil {
		return err
	}
	if r.JSON200 == nil {
		return fmt.Errorf("execute: %d %s", r.StatusCode(), r.Body)
	}
	res, err := r.JSON200.AsExecuteResult()
	if err != nil {
		return err
	}
	if got, _ := json.Marshal(res.Result); string(got) != "6" || res.Stdout != "hi\n" || r.HTTPResponse.Header.Get("X-Request-Id") == "" {
		return fmt.Errorf("execute: result %s, stdout %q", got, res.Stdout)
	}
	bad, err := c.ExecuteWithResponse(ctx, pyexecapi.ExecuteRequest{Script: "def main():\n    raise ValueError('no')\n"})
	if err != nil {
		return err
	}
	if bad.JSON422 == nil || bad.JSON422.Error.Type != pyexecapi.ScriptError || bad.JSON422.Error.Retryable {
		return fmt.Errorf("script error: %d %s", bad.StatusCode(), bad.Body)
	}
	h, err := c.GetHealthWithResponse(ctx)
	if err != nil {
		return err
	}
	if h.JSON200 == nil || h.JSON200.Status != "healthy" {
		return fmt.Errorf("health: %d %s", h.StatusCode(), h.Body)
	}
	fmt.Println("ok")
	return nil
}
`

// TestOpenAPIGeneratesAGoClient generates a Go client from
// api/openapi.yaml with oapi-codegen, in a module of its own outside the
// repository, compiles it and runs a program with it against the real
// server: the description is one that code generators accept and whose
// client works.
func TestOpenAPIGeneratesAGoClient(t *testing.T) {
	requireJail(t)
	spec, err := filepath.Abs("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module pyexecapitest\n\ngo 1.22\n")
	write("main.go", codegenProgram)
	write("codegen.yaml", "package: pyexecapi\ngenerate:\n  models: true\n  client: true\noutput: pyexecapi/client.go\n")
	// A module of its own: GOFLAGS from the repository's make (-mod=...)
	// must not reach it, and it may fetch the runtime it imports.
	goCmd := func(timeout time.Duration, args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
		return out
	}
	os.MkdirAll(filepath.Join(dir, "pyexecapi"), 0o755)
	goCmd(5*time.Minute, "run", oapiCodegen, "-config", "codegen.yaml", spec)
	goCmd(2*time.Minute, "get", oapiRuntime)
	goCmd(2*time.Minute, "mod", "tidy")
	goCmd(2*time.Minute, "vet", "./...")
	goCmd(2*time.Minute, "build", "-o", "client", ".")

	s := startServer(t, "tok", "--mode", "fork", "--warm", "1")
	cmd := exec.Command(filepath.Join(dir, "client"))
	cmd.Env = append(os.Environ(), "PYEXEC_URL="+s.url, "PYEXEC_TOKEN=tok")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the generated client against the server: %v\n%s", err, out)
	}
}

// TestOpenAPIDescribesOperationsAndMsgpack: every operation has an
// operationId (generated clients name their methods after it), and every
// JSON body /execute takes or answers is declared in msgpack too; the
// server takes and answers each msgpack media type the description names,
// with bodies that match it.
func TestOpenAPIDescribesOperationsAndMsgpack(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" || ids[op.OperationID] {
				t.Errorf("%s %s: operationId %q missing or repeated", method, path, op.OperationID)
			}
			ids[op.OperationID] = true
		}
	}
	execute := doc.Paths.Find("/execute").Post
	msgpackTypes := []string{"application/msgpack", "application/vnd.msgpack"}
	for _, ct := range append(msgpackTypes, "application/x-msgpack") {
		if execute.RequestBody.Value.Content.Get(ct) == nil {
			t.Errorf("the request body has no %s", ct)
		}
	}
	for status, resp := range execute.Responses.Map() {
		content := resp.Value.Content
		if content.Get("application/json") == nil {
			continue
		}
		for _, ct := range msgpackTypes {
			if content.Get(ct) == nil {
				t.Errorf("/execute's %s answer has JSON but no %s", status, ct)
			}
		}
	}

	s := startServer(t, "tok", "--mode", "fork", "--warm", "1")
	schema := func(name string) *openapi3.Schema { return doc.Components.Schemas[name].Value }
	post := func(ct, script string, wantStatus int, wantSchema *openapi3.Schema) {
		t.Helper()
		body, _ := msgpack.Marshal(map[string]any{"script": script})
		req, _ := http.NewRequest(http.MethodPost, s.url+"/execute", bytes.NewReader(body))
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		wantCT := "application/msgpack"
		if ct == "application/vnd.msgpack" {
			wantCT = ct
		}
		if resp.StatusCode != wantStatus || resp.Header.Get("Content-Type") != wantCT {
			t.Errorf("%s: %d %s, want %d %s", ct, resp.StatusCode, resp.Header.Get("Content-Type"), wantStatus, wantCT)
			return
		}
		var decoded any
		if err := msgpack.Unmarshal(raw, &decoded); err != nil {
			t.Errorf("%s: not msgpack: %v", ct, err)
			return
		}
		// The schema is checked on the JSON form of what msgpack carried.
		asJSON, _ := json.Marshal(decoded)
		var v any
		dec := json.NewDecoder(strings.NewReader(string(asJSON)))
		dec.UseNumber()
		_ = dec.Decode(&v)
		if err := wantSchema.VisitJSON(v, openapi3.VisitAsResponse()); err != nil {
			t.Errorf("%s: the answer does not match the description: %v\n%s", ct, err, asJSON)
		}
	}
	for _, ct := range []string{"application/msgpack", "application/vnd.msgpack", "application/x-msgpack; charset=binary"} {
		post(ct, helloScript, http.StatusOK, schema("ExecuteAnswer"))
		post(ct, "def main(:\n", http.StatusBadRequest, schema("ErrorResponse"))
	}
}
