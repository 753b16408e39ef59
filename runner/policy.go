package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// Policy is what the sandbox checks in a script before any of its code
// runs (python/pyexec/policy.py has the exact rules): modules it may not
// import and names it may not use. It is for early, clear refusals
// (forbidden_import, forbidden_call), not a boundary: the jail is.
type Policy struct {
	// Name is what /health reports.
	Name string `json:"name"`
	// DenyImports are modules a script may not import: an entry refuses
	// that module and every module below it ("http.client" refuses
	// http.client, not http).
	DenyImports []string `json:"deny_imports"`
	// DenyCalls are names (eval) and dotted names (os.system) a script
	// may not use; a trailing * matches any suffix (os.exec*).
	DenyCalls []string `json:"deny_calls"`
}

// Refuses says whether the policy refuses anything beyond syntax errors
// and a missing main.
func (p Policy) Refuses() bool { return len(p.DenyImports) > 0 || len(p.DenyCalls) > 0 }

// SeedPolicy is the original service's list ("dangerous import/function
// blocking"), made coherent (docs/security.md, "Validation", says why each rule
// exists): no program runs (subprocess, pty, os.system, os.popen, the
// os.exec*, os.spawn*, os.posix_spawn* and os.fork* families); no network
// module (socket, ssl and the clients and servers built on them, while the
// harmless parts of their packages, urllib.parse and http.HTTPStatus,
// pass); no code built from text (eval, exec, __import__ and
// importlib.import_module, the same by another name); and no file handle
// or directory listing by the original's names and their exact aliases
// (open and io.open, which is the same function; os.listdir, os.scandir,
// os.walk, os.fwalk, glob.glob, glob.iglob).
func SeedPolicy() Policy {
	return Policy{
		Name: "seed",
		DenyImports: []string{
			"subprocess", "pty", "socket", "ssl", "socketserver", "asyncore", "asynchat",
			"urllib.request", "urllib.robotparser", "urllib3", "http.client", "http.server", "http.cookiejar",
			"httpx", "requests", "aiohttp", "ftplib", "smtplib",
			"poplib", "imaplib", "nntplib", "telnetlib", "xmlrpc",
		},
		DenyCalls: []string{
			"eval", "exec", "__import__", "open", "io.open", "importlib.import_module",
			"os.listdir", "os.scandir", "os.walk", "os.fwalk", "glob.glob", "glob.iglob",
			"os.system", "os.popen", "os.exec*", "os.spawn*", "os.posix_spawn*", "os.fork*",
		},
	}
}

// NonePolicy checks syntax and main only.
func NonePolicy() Policy {
	return Policy{Name: "none", DenyImports: []string{}, DenyCalls: []string{}}
}

// LoadPolicy returns the policy named by spec: "seed", "none", or the path
// of a JSON file with the fields of Policy, e.g.
//
//	{"name": "strict", "deny_imports": ["socket"], "deny_calls": ["eval", "os.system"]}
//
// Unknown fields are an error.
func LoadPolicy(spec string) (Policy, error) {
	switch spec {
	case "seed":
		return SeedPolicy(), nil
	case "none":
		return NonePolicy(), nil
	}
	raw, err := os.ReadFile(spec)
	if err != nil {
		return Policy{}, fmt.Errorf("cannot read policy %q (use seed, none or a JSON file): %w", spec, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	p := Policy{}
	if err := dec.Decode(&p); err != nil {
		return Policy{}, fmt.Errorf("cannot parse policy %s: %w", spec, err)
	}
	if p.Name == "" {
		p.Name = spec
	}
	if p.DenyImports == nil {
		p.DenyImports = []string{}
	}
	if p.DenyCalls == nil {
		p.DenyCalls = []string{}
	}
	for _, name := range append(append([]string(nil), p.DenyImports...), p.DenyCalls...) {
		if name == "" || strings.ContainsAny(name, " \t\n") {
			return Policy{}, fmt.Errorf("policy %s: %q is not a module or name", spec, name)
		}
	}
	return p, nil
}
