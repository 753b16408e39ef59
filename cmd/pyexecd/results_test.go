package main

import (
	"encoding/json"
	"reflect"
	"testing"
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
}
