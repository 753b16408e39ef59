package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSeedPolicy: the default policy refuses the original service's list
// before any of the script's code runs, with the rule, line and column; the
// original service's examples still pass; and what the policy misses, the
// jail holds.
func TestSeedPolicy(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "2", "--policy", "seed")

	t.Run("the original service's examples pass", func(t *testing.T) {
		for _, script := range []string{helloScript, numpyScript, pandasScript} {
			s.mustSucceed(t, script, nil, nil)
		}
	})

	cases := []struct {
		name, script, wantType string
		line, offset           int
	}{
		{"import", "print('ran')\nimport subprocess\ndef main(): pass\n", "forbidden_import", 2, 1},
		{"aliased import", "import os, socket as s\ndef main(): pass\n", "forbidden_import", 1, 1},
		{"from import", "def main():\n    from urllib.request import urlopen\n", "forbidden_import", 2, 5},
		{"eval", "print('ran')\ndef main():\n    return eval('1')\n", "forbidden_call", 3, 12},
		{"open as a name", "def main():\n    f = open\n", "forbidden_call", 2, 9},
		{"os.system through an alias", "import os as o\ndef main():\n    o.system('id')\n", "forbidden_call", 3, 5},
		{"from os import", "from os import popen as p\ndef main(): pass\n", "forbidden_call", 1, 1},
		{"getattr with a constant", "import os\ndef main():\n    getattr(os, 'listdir')('/')\n", "forbidden_call", 3, 5},
		{"exec family", "import os\ndef main():\n    os.execv('/bin/sh', ['sh'])\n", "forbidden_call", 3, 5},
		{"glob", "import glob\ndef main():\n    return glob.glob('/*')\n", "forbidden_call", 3, 12},
		// Names as Python reads them: the check that lets most scripts
		// skip the policy's walk sees these too (python/pyexec/policy.py).
		{"a full-width eval", "def main():\n    return \uff45\uff56\uff41\uff4c('1')\n", "forbidden_call", 2, 12},
		{"getattr with an escaped name", "import os\ndef main():\n    getattr(os, 'list\\x64ir')('/')\n", "forbidden_call", 3, 5},
		{"getattr with joined literals", "import os\ndef main():\n    getattr(os, 'sys' 'tem')('id')\n", "forbidden_call", 3, 5},
		{"missing main", "def helper():\n    pass\n", "missing_main", 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := s.mustFail(t, tc.script, nil, tc.wantType, http.StatusBadRequest)
			if r.Error.Line != tc.line || r.Error.Offset != tc.offset || r.Error.Retryable {
				t.Errorf("line %d offset %d retryable %v, want %d:%d not retryable (%s)",
					r.Error.Line, r.Error.Offset, r.Error.Retryable, tc.line, tc.offset, r.Error.Message)
			}
			if r.Stdout != "" {
				t.Errorf("stdout %q: the script's code ran before the refusal", r.Stdout)
			}
		})
	}

	t.Run("what scripts write every day passes", func(t *testing.T) {
		var got []any
		s.mustSucceed(t, `import urllib.parse
import http
from http import HTTPStatus

def load(open):
    return open

class Store:
    def open(self):
        return "store"

def main():
    if False:
        open("never.txt")
    return [urllib.parse.quote("a b"), int(http.HTTPStatus.NOT_FOUND), HTTPStatus.OK.phrase, load(3), Store().open()]
`, nil, &got)
		if fmt.Sprint(got) != "[a%20b 404 OK 3 store]" {
			t.Errorf("got %v", got)
		}
	})

	t.Run("each refusal names the rule, the line and what to use", func(t *testing.T) {
		for _, tc := range []struct{ script, kind, rule, alternative string }{
			{"def main():\n    return open('sales.csv').read()\n", "forbidden_call", "'open', line 2", "pandas.read_csv"},
			{"import io\ndef main():\n    return io.open('sales.csv').read()\n", "forbidden_call", "'io.open', line 3", "pathlib.Path(name).read_text()"},
			{"import os\ndef main():\n    return os.listdir('.')\n", "forbidden_call", "'os.listdir', line 3", "iterdir()"},
			{"import os\ndef main():\n    return list(os.walk('.'))\n", "forbidden_call", "'os.walk', line 3", "rglob"},
			{"import urllib.request\ndef main(): pass\n", "forbidden_import", "'urllib.request', line 1", "no network"},
			{"import http\ndef main():\n    return http.client.HTTPConnection('x')\n", "forbidden_import", "'http.client', line 3", "no network"},
		} {
			r := s.mustFail(t, tc.script, nil, tc.kind, http.StatusBadRequest)
			if !strings.Contains(r.Error.Message, "policy rule "+tc.rule) || !strings.Contains(r.Error.Message, tc.alternative) {
				t.Errorf("%q: message %q, want the rule %s and %q", tc.script, r.Error.Message, tc.rule, tc.alternative)
			}
		}
	})

	t.Run("evasions the policy misses, and the jail holding", func(t *testing.T) {
		var got map[string]string
		s.mustSucceed(t, `import os
def main():
    out = {}
    try:
        out["system"] = str(getattr(os, "sys" + "tem")("echo escaped > /tmp/x; cat /etc/hostname"))
    except OSError as e:
        out["system"] = type(e).__name__
    try:
        import builtins
        out["read"] = getattr(builtins, "op" + "en")("/etc/hostname").read()
    except OSError as e:
        out["read"] = type(e).__name__
    return out
`, nil, &got)
		if got["system"] == "0" || got["read"] != "FileNotFoundError" {
			t.Errorf("got %v: want os.system to fail (no program runs) and no host file to exist", got)
		}
	})

	t.Run("health names the policy", func(t *testing.T) {
		h := health(t, s)
		if h.Policy != "seed" || !slices.Contains(h.Features, "dangerous import blocking") {
			t.Errorf("health %+v", h)
		}
	})
}

// TestPolicyFile: an operator's own policy, and --policy none.
func TestPolicyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(path, []byte(`{"name": "no-math", "deny_imports": ["math"], "deny_calls": ["print"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, "", "--mode", "fork", "--warm", "1", "--policy", path)
	s.mustFail(t, "import math\ndef main(): pass\n", nil, "forbidden_import", http.StatusBadRequest)
	s.mustFail(t, "def main():\n    print(1)\n", nil, "forbidden_call", http.StatusBadRequest)
	s.mustSucceed(t, "import os\ndef main():\n    return os.listdir('/tmp')\n", nil, nil)
	if h := health(t, s); h.Policy != "no-math" {
		t.Errorf("policy %q", h.Policy)
	}

	none := startServer(t, "", "--mode", "fork", "--warm", "1", "--policy", "none")
	none.mustSucceed(t, "import subprocess, os\ndef main():\n    return len(os.listdir('/'))\n", nil, nil)
	if h := health(t, none); h.Policy != "none" || slices.Contains(h.Features, "dangerous import blocking") {
		t.Errorf("health %+v", h)
	}
}

type healthFields struct {
	Policy   string   `json:"policy"`
	Features []string `json:"features"`
}

func health(t *testing.T, s *testServer) healthFields {
	t.Helper()
	resp, err := http.Get(s.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h healthFields
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h
}
