package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"

	"github.com/sandbox-exec/pyexec/internal/examples"
)

// script is one kind of request a scenario sends, with what a correct
// answer looks like.
type script struct {
	Name      string          `json:"name"`
	Weight    int             `json:"weight"`
	Script    string          `json:"script"`
	Input     json.RawMessage `json:"input,omitempty"`
	TimeoutMS int             `json:"timeout_ms,omitempty"`
	Expect    expectation     `json:"expect"`

	// check, when set, validates a successful result beyond Expect.Result.
	check func(result json.RawMessage) error
	body  []byte
}

// expectation is the answer a script must get. Status 0 means 200.
type expectation struct {
	Status    int             `json:"status,omitempty"`
	ErrorType string          `json:"error_type,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
}

// scenario is a weighted mix of scripts.
type scenario struct {
	Name    string
	Scripts []*script
	total   int
}

// pick chooses a script by weight.
func (s *scenario) pick(r *rand.Rand) *script {
	if len(s.Scripts) == 1 {
		return s.Scripts[0]
	}
	n := r.IntN(s.total)
	for _, sc := range s.Scripts {
		if n < sc.Weight {
			return sc
		}
		n -= sc.Weight
	}
	return s.Scripts[len(s.Scripts)-1]
}

func newScenario(name string, scripts []*script) (*scenario, error) {
	s := &scenario{Name: name, Scripts: scripts}
	for _, sc := range scripts {
		if sc.Weight <= 0 {
			sc.Weight = 1
		}
		if sc.Script == "" {
			return nil, fmt.Errorf("scenario %s: script %q is empty", name, sc.Name)
		}
		req := map[string]any{"script": sc.Script}
		if sc.Input != nil {
			req["input"] = sc.Input
		}
		if sc.TimeoutMS > 0 {
			req["timeout_ms"] = sc.TimeoutMS
		}
		body, err := json.Marshal(req)
		if err != nil {
			return nil, err
		}
		sc.body = body
		s.total += sc.Weight
	}
	return s, nil
}

// verify says whether an answer is the one the script expects; a wrong
// answer counts as an error in the report, whatever its status.
func (sc *script) verify(status int, errType string, result json.RawMessage) error {
	want := sc.Expect.Status
	if want == 0 {
		want = 200
	}
	if status != want {
		return fmt.Errorf("%s: status %d (%s), want %d", sc.Name, status, errType, want)
	}
	if sc.Expect.ErrorType != "" && errType != sc.Expect.ErrorType {
		return fmt.Errorf("%s: error type %q, want %q", sc.Name, errType, sc.Expect.ErrorType)
	}
	if sc.Expect.Result != nil && !jsonEqual(result, sc.Expect.Result) {
		return fmt.Errorf("%s: result %s, want %s", sc.Name, result, sc.Expect.Result)
	}
	if sc.check != nil && status == 200 {
		return sc.check(result)
	}
	return nil
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(x, y)
}

func checkNumpy(result json.RawMessage) error {
	var r map[string]float64
	if err := json.Unmarshal(result, &r); err != nil || len(r) != 4 || r["min"] > r["mean"] || r["mean"] > r["max"] {
		return fmt.Errorf("numpy: result %s is not the statistics of a sample", result)
	}
	return nil
}

func checkPandas(result json.RawMessage) error {
	var r map[string]float64
	if err := json.Unmarshal(result, &r); err != nil || r["count"] != 50 || r["correlation"] < -1 || r["correlation"] > 1 {
		return fmt.Errorf("pandas: result %s is not the expected statistics", result)
	}
	return nil
}

// builtinScripts returns fresh copies of the built-in scripts by name.
func builtinScripts() map[string]*script {
	return map[string]*script{
		"hello":  {Name: "hello", Script: examples.Hello, Expect: expectation{Result: json.RawMessage(`{"message":"Hello, World!"}`)}},
		"numpy":  {Name: "numpy", Script: examples.Numpy, check: checkNumpy},
		"pandas": {Name: "pandas", Script: examples.Pandas, check: checkPandas},
		"cpu": {Name: "cpu", Script: "def main():\n    return sum(i * i for i in range(300000))\n",
			Expect: expectation{Result: json.RawMessage(`8999955000050000`)}},
		"sleep": {Name: "sleep", Script: "import time\ndef main():\n    time.sleep(0.1)\n    return 'slept'\n",
			Expect: expectation{Result: json.RawMessage(`"slept"`)}},
		"syntax_error": {Name: "syntax_error", Script: "def main(:\n    pass\n",
			Expect: expectation{Status: 400, ErrorType: "syntax_error"}},
		"exception": {Name: "exception", Script: "def main():\n    raise ValueError('expected')\n",
			Expect: expectation{Status: 422, ErrorType: "script_error"}},
		"timeout": {Name: "timeout", Script: "import time\ndef main():\n    time.sleep(5)\n", TimeoutMS: 100,
			Expect: expectation{Status: 422, ErrorType: "timeout"}},
	}
}

// builtinScenario returns a named built-in scenario: one of the scripts
// alone, or "mix" (the examples with failing scripts among them).
func builtinScenario(name string) (*scenario, error) {
	scripts := builtinScripts()
	if name == "mix" {
		weights := map[string]int{"hello": 4, "numpy": 2, "pandas": 2, "cpu": 1, "syntax_error": 1, "exception": 1, "timeout": 1}
		var mix []*script
		for _, n := range []string{"hello", "numpy", "pandas", "cpu", "syntax_error", "exception", "timeout"} {
			sc := scripts[n]
			sc.Weight = weights[n]
			mix = append(mix, sc)
		}
		return newScenario("mix", mix)
	}
	sc, ok := scripts[name]
	if !ok {
		return nil, fmt.Errorf("unknown scenario %q (built in: hello, numpy, pandas, cpu, sleep, syntax_error, exception, timeout, mix; or file:PATH)", name)
	}
	return newScenario(name, []*script{sc})
}

// loadScenario reads a JSON array of scripts with weights and expectations.
func loadScenario(path string) (*scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read scenario file: %w", err)
	}
	var scripts []*script
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&scripts); err != nil {
		return nil, fmt.Errorf("cannot parse scenario file %s: %w", path, err)
	}
	if len(scripts) == 0 {
		return nil, fmt.Errorf("scenario file %s has no scripts", path)
	}
	return newScenario(path, scripts)
}
