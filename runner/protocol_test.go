package runner

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func TestReplyRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	in := errorFrame{Type: msgError, Kind: "script_error", Message: "boom", Line: 3}
	if err := writeFrame(&buf, &in); err != nil {
		t.Fatal(err)
	}
	r, err := readReply(&buf, 1<<10, replyShape{})
	if err != nil || r.result != nil || r.failed == nil {
		t.Fatalf("readReply = %+v, %v", r, err)
	}
	if *r.failed != in {
		t.Errorf("got %+v, want %+v", *r.failed, in)
	}
}

func TestReadReplyRefusesWhatTheProtocolDoesNotSay(t *testing.T) {
	frame := func(v any) []byte {
		var buf bytes.Buffer
		if err := writeFrame(&buf, v); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name  string
		bytes []byte
		want  error
	}{
		{"over the cap", []byte{0, 0, 0x10, 0}, errFrameTooLarge},
		{"not msgpack", []byte{0, 0, 0, 2, 0xc1, 0xc1}, errMalformed},
		{"not a map", frame([]int{1, 2}), errMalformed},
		{"unknown type", frame(map[string]any{"type": "exit", "status": 9}), errMalformed},
		{"unknown key", frame(map[string]any{"type": "result", "result": []byte("1"), "max_result_bytes": 0}), errMalformed},
		{"ready as reply", frame(readyFrame{Type: msgReady}), errMalformed},
		{"a batch's reply to a single script", frame(resultsFrame{Type: msgResults}), errMalformed},
		{"more files than the cap", frame(map[string]any{"type": "result", "result": []byte("1"), "files": make([]any, 17)}), errMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readReply(bytes.NewReader(tc.bytes), 1<<10, replyShape{MaxFiles: 4})
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// A hostile sandbox can write any bytes on its channel: reading them must
// never panic nor allocate more than the frame holds.
func FuzzReadReply(f *testing.F) {
	var buf bytes.Buffer
	_ = writeFrame(&buf, &resultFrame{Type: msgResult, Result: []byte(`{"a":1}`)})
	f.Add(buf.Bytes())
	f.Add([]byte("\x00\x00\x00\x07\xc9H\x13\x91t\xeb\x99"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = readReply(bytes.NewReader(b), 1<<16, replyShape{MaxFiles: 4})
		_ = readBatch(bytes.NewReader(b), Limits{ResultBytes: 1 << 16, OutputBytes: 64, MaxFiles: 4}, 3, &batchReply{})
	})
}

// msgpackKeys lists the msgpack keys of a struct type, by its tags.
func msgpackKeys(v any) []string {
	typ := reflect.TypeOf(v)
	var keys []string
	for i := 0; i < typ.NumField(); i++ {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("msgpack"), ",")
		keys = append(keys, name)
	}
	sort.Strings(keys)
	return keys
}

// TestProtocolMatchesPython fails when the Python side sends or expects a
// key the Go types don't have, or the reverse: both halves must describe
// every message the same way.
func TestProtocolMatchesPython(t *testing.T) {
	python := "/usr/bin/python3"
	if _, err := exec.LookPath(python); err != nil {
		t.Skipf("no %s: %v", python, err)
	}
	cmd := exec.Command(python, "-I", "-B", "-c", `
import json, sys
sys.path.insert(0, "../python")
from pyexec import protocol
print(json.dumps({"channel": protocol.CHANNEL_MESSAGES, "control": protocol.CONTROL_MESSAGES,
                  "limits": protocol.LIMIT_KEYS, "zygote_config": protocol.ZYGOTE_CONFIG_KEYS,
                  "policy": protocol.POLICY_KEYS}))
`)
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var py struct {
		Channel, Control map[string][]string
		Limits           []string
		ZygoteConfig     []string `json:"zygote_config"`
		Policy           []string
	}
	if err := json.Unmarshal(raw, &py); err != nil {
		t.Fatal(err)
	}
	compare := func(what string, goTypes map[string]any, pyTypes map[string][]string) {
		for name, v := range goTypes {
			keys := append([]string(nil), pyTypes[name]...)
			sort.Strings(keys)
			if !reflect.DeepEqual(msgpackKeys(v), keys) {
				t.Errorf("%s message %q: Go keys %v, Python keys %v", what, name, msgpackKeys(v), keys)
			}
		}
		for name := range pyTypes {
			if _, ok := goTypes[name]; !ok {
				t.Errorf("%s message %q exists in Python only", what, name)
			}
		}
	}
	compare("channel", channelMessages, py.Channel)
	compare("control", controlMessages, py.Control)
	sort.Strings(py.Limits)
	if got := msgpackKeys(wireLimits{}); !reflect.DeepEqual(got, py.Limits) {
		t.Errorf("limits: Go keys %v, Python keys %v", got, py.Limits)
	}
	jsonKeys := func(v any) []string {
		var keys []string
		typ := reflect.TypeOf(v)
		for i := 0; i < typ.NumField(); i++ {
			keys = append(keys, typ.Field(i).Tag.Get("json"))
		}
		sort.Strings(keys)
		return keys
	}
	sort.Strings(py.ZygoteConfig)
	if got := jsonKeys(zygoteConfig{}); !reflect.DeepEqual(got, py.ZygoteConfig) {
		t.Errorf("zygote config: Go keys %v, Python keys %v", got, py.ZygoteConfig)
	}
	sort.Strings(py.Policy)
	if got := jsonKeys(Policy{}); !reflect.DeepEqual(got, py.Policy) {
		t.Errorf("policy: Go keys %v, Python keys %v", got, py.Policy)
	}
}

// TestReadBatch: a batch's frames in the protocol's order are read item by
// item; out of order, a wrong index, an empty output or an input over its
// output cap stop the reading, keeping what finished.
func TestReadBatch(t *testing.T) {
	frames := func(vs ...any) []byte {
		var buf bytes.Buffer
		for _, v := range vs {
			if err := writeFrame(&buf, v); err != nil {
				t.Fatal(err)
			}
		}
		return buf.Bytes()
	}
	limits := Limits{ResultBytes: 1 << 10, OutputBytes: 8, MaxFiles: 4}
	started := startedFrame{Type: msgStarted}
	out := func(text string) outputFrame { return outputFrame{Type: msgOutput, Stream: "stdout", Text: text} }
	item := func(i int) itemFrame { return itemFrame{Type: msgItem, Index: i, Result: []byte("1")} }
	for _, tc := range []struct {
		name      string
		bytes     []byte
		wantErr   error
		wantItems int
	}{
		{"whole", frames(started, out("a\n"), item(0), item(1), resultsFrame{Type: msgResults}), nil, 2},
		{"cut short", frames(started, item(0), out("b")), io.EOF, 1},
		{"an item before started", frames(item(0)), errMalformed, 0},
		{"the wrong index", frames(started, item(1)), errMalformed, 0},
		{"an empty output", frames(started, out("")), errMalformed, 0},
		{"output not UTF-8", frames(started, out("\xff")), errMalformed, 0},
		{"the end too early", frames(started, item(0), resultsFrame{Type: msgResults}), errMalformed, 1},
		{"more items than inputs", frames(started, item(0), item(1), item(2)), errMalformed, 2},
		{"an input's output over the cap", frames(started, item(0), out("12345"), out("6789")), errBatchStopped, 1},
		{"the inputs' output over the cap together", frames(started, out("12345"), item(0), out("6789")), errBatchStopped, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b batchReply
			err := readBatch(bytes.NewReader(tc.bytes), limits, 2, &b)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if len(b.items) != tc.wantItems {
				t.Errorf("%d items kept, want %d", len(b.items), tc.wantItems)
			}
		})
	}
}
