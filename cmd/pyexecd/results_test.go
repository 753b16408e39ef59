package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// TestDataScienceResults: what a pandas user returns most often comes back
// as data, through the whole path (the mapping is README's "result").
func TestDataScienceResults(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "1", "--policy", "seed")
	var got map[string]any
	s.mustSucceed(t, `import pandas as pd, numpy as np, datetime, decimal
def main():
    df = pd.DataFrame({"day": pd.to_datetime(["2024-01-31", None]), "v": [1.5, np.nan]})
    return {"frame": df, "records": df.to_dict("records"), "series": df["v"],
            "stamp": pd.Timestamp("2024-01-31 12:00"), "span": pd.Timedelta("90min"),
            "date": datetime.date(2024, 2, 1), "dec": decimal.Decimal("0.10"), "bytes": b"hi",
            "cat": pd.Series(["a", "b"], dtype="category"), "set": {2, 1}}
`, nil, &got)
	raw, _ := json.Marshal(got)
	var want map[string]any
	_ = json.Unmarshal([]byte(`{"frame":[{"day":"2024-01-31T00:00:00","v":1.5},{"day":null,"v":null}],
		"records":[{"day":"2024-01-31T00:00:00","v":1.5},{"day":null,"v":null}],"series":[1.5,null],
		"stamp":"2024-01-31T12:00:00","span":"P0DT1H30M0S","date":"2024-02-01","dec":"0.10","bytes":"aGk=",
		"cat":["a","b"],"set":[1,2]}`), &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("result %s", raw)
	}
}

// TestUsageIsReported: every answer carries what the sandbox used, from
// the kernel (its /proc before the kill, or the zygote's wait4).
func TestUsageIsReported(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "1")
	var usage struct {
		Usage struct {
			CPUMS    float64 `json:"cpu_ms"`
			MaxRSSKB int64   `json:"max_rss_kb"`
		} `json:"usage"`
	}
	body := s.rawExecute(t, "def main():\n    n = 0\n    for i in range(3_000_000):\n        n += i\n    return n\n")
	if err := json.Unmarshal(body, &usage); err != nil {
		t.Fatal(err)
	}
	if usage.Usage.CPUMS < 50 || usage.Usage.MaxRSSKB < 10_000 {
		t.Errorf("usage %+v: want the loop's CPU (tens of ms at least) and the interpreter's resident set", usage.Usage)
	}
	failed := s.rawExecute(t, "import ctypes\ndef main():\n    ctypes.string_at(0)\n")
	usage.Usage.MaxRSSKB = 0
	if err := json.Unmarshal(failed, &usage); err != nil || usage.Usage.MaxRSSKB < 10_000 {
		t.Errorf("a crashed sandbox's usage: %s", failed)
	}

	// Children left running when main returns are killed with the
	// sandbox; what they used must still count, whether they keep the
	// output pipes (the runner waits for their end of file in vain) or
	// let go of them (the output is complete at once). Each spins, never
	// waited for; main returns once its own /proc shows them at 300 ms of
	// CPU together, and returns that figure.
	for name, letGo := range map[string]string{"keeping the pipes": "pass", "letting go of the pipes": "os.dup2(os.open(os.devnull, os.O_WRONLY), 1); os.dup2(1, 2)"} {
		script := fmt.Sprintf(`import os, time
def cpu_ms(pid):
    fields = open("/proc/%%d/stat" %% pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 10
def main():
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            %s
            while True:
                pass
        children.append(pid)
    while sum(map(cpu_ms, children)) < 300:
        time.sleep(0.02)
    return sum(map(cpu_ms, children))
`, letGo)
		var answer struct {
			Result float64 `json:"result"`
			Usage  struct {
				CPUMS float64 `json:"cpu_ms"`
			} `json:"usage"`
		}
		body := s.rawExecute(t, script)
		if err := json.Unmarshal(body, &answer); err != nil || answer.Result < 300 || answer.Usage.CPUMS < answer.Result {
			t.Errorf("children %s: %s: want usage.cpu_ms at least the children's CPU the script saw", name, body)
		}
	}

	// A child that ended unreaped (a zombie when the sandbox is killed)
	// and one still running: both counted (the kill's teardown reaps both
	// with their times discarded).
	zombie := s.rawExecute(t, `import os, time
def cpu_ms(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 10
def spin(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
def main():
    done = os.fork()
    if done == 0:
        spin(0.3)
        os._exit(0)
    running = os.fork()
    if running == 0:
        spin(0.3)
        while True:
            pass
    while open("/proc/%d/stat" % done).read().rsplit(")", 1)[1].split()[0] != "Z" or cpu_ms(running) < 300:
        time.sleep(0.02)
    return cpu_ms(done) + cpu_ms(running)
`)
	var zombieAnswer struct {
		Result float64 `json:"result"`
		Usage  struct {
			CPUMS float64 `json:"cpu_ms"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(zombie, &zombieAnswer); err != nil || zombieAnswer.Result < 500 || zombieAnswer.Usage.CPUMS < zombieAnswer.Result {
		t.Errorf("a zombie child and a running one: %s: want usage.cpu_ms at least both children's CPU", zombie)
	}

	// A script that writes a reply of its own and ends at once: its
	// figures come from its exit report.
	ended := s.rawExecute(t, frameHelper+`
def main():
    x = bytearray(30 << 20)
    send(frame({"type": "result", "result": b"1"}))
    os._exit(0)
`)
	usage.Usage.MaxRSSKB = 0
	if err := json.Unmarshal(ended, &usage); err != nil || usage.Usage.MaxRSSKB < 40_000 {
		t.Errorf("a sandbox that ended after its own reply: %s: want its peak resident set (over 40 MB)", ended)
	}
}

// TestBatches: one sandbox, the script once, main once per input in order,
// each answer with its own result or error and output; a failing input in
// the middle does not stop the others; state is shared within the batch.
func TestBatches(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "1", "--max-batch", "5")
	script := "seen = []\ndef main(x):\n    seen.append(x)\n    print('item', x)\n    return {'inv': 10 // x, 'seen': len(seen)}\n"
	var answer struct {
		Results []struct {
			Result *struct{ Inv, Seen int } `json:"result"`
			Error  *struct{ Type, Message string }
			Stdout string
		}
		Stdout string
		Usage  *struct {
			CPUMS float64 `json:"cpu_ms"`
		}
	}
	raw := s.rawExecuteBody(t, map[string]any{"script": script, "inputs": []int{5, 0, 2}})
	if err := json.Unmarshal(raw, &answer); err != nil || len(answer.Results) != 3 {
		t.Fatalf("answer %s (%v)", raw, err)
	}
	first, bad, last := answer.Results[0], answer.Results[1], answer.Results[2]
	if first.Result == nil || first.Result.Inv != 2 || first.Result.Seen != 1 || first.Stdout != "item 5\n" {
		t.Errorf("first item %+v", first)
	}
	if bad.Error == nil || bad.Error.Type != "script_error" || !strings.Contains(bad.Error.Message, "ZeroDivisionError") || bad.Stdout != "item 0\n" {
		t.Errorf("failing item %+v", bad)
	}
	if last.Result == nil || last.Result.Inv != 5 || last.Result.Seen != 3 {
		t.Errorf("last item %+v: want state shared within the batch (seen 3)", last)
	}
	if answer.Usage == nil {
		t.Error("no usage")
	}
	// An item that prints a lone surrogate: its bytes arrive as U+FFFD, as
	// in a single request, and the other items keep their answers.
	raw = s.rawExecuteBody(t, map[string]any{"script": "def main(x):\n    print('odd \\udcff', x)\n    return x\n", "inputs": []int{1, 2}})
	var odd struct {
		Results []struct {
			Result int
			Stdout string
		}
	}
	if err := json.Unmarshal(raw, &odd); err != nil || len(odd.Results) != 2 || odd.Results[1].Result != 2 || odd.Results[0].Stdout != "odd \ufffd 1\n" {
		t.Errorf("a batch whose items print a lone surrogate: %s", raw)
	}
	for _, body := range []map[string]any{
		{"script": script, "inputs": []int{}},
		{"script": script, "inputs": []int{1, 2, 3, 4, 5, 6}},
		{"script": script, "inputs": []int{1}, "input": 1},
		{"script": script, "inputs": 3},
	} {
		var e struct{ Error struct{ Type string } }
		_ = json.Unmarshal(s.rawExecuteBody(t, body), &e)
		if e.Error.Type != "invalid_request" {
			t.Errorf("%v: error %q, want invalid_request", body["inputs"], e.Error.Type)
		}
	}
}

// TestBatchOverMsgpack: bin inputs arrive as bytes, each result comes back
// as a msgpack value.
func TestBatchOverMsgpack(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "1")
	body, _ := msgpack.Marshal(map[string]any{"script": "def main(b):\n    return [type(b).__name__, len(b)]\n",
		"inputs": [][]byte{{0, 1}, {2, 3, 4}}})
	req, _ := http.NewRequest(http.MethodPost, s.url+"/execute", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/msgpack")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer struct {
		Results []struct {
			Result []any `msgpack:"result"`
		} `msgpack:"results"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := msgpack.Unmarshal(raw, &answer); err != nil || len(answer.Results) != 2 {
		t.Fatalf("answer %q (%v)", raw, err)
	}
	if fmt.Sprint(answer.Results[0].Result) != "[bytes 2]" || fmt.Sprint(answer.Results[1].Result) != "[bytes 3]" {
		t.Errorf("results %+v", answer.Results)
	}
}
