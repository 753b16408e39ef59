package main

import (
	"encoding/json"
	"reflect"
	"testing"
)

// labelsScript returns what pandas users return most: aggregates whose
// meaning is in their index and column labels.
const labelsScript = `import pandas as pd
def main():
    df = pd.DataFrame({"region": ["n", "s", "n"], "product": ["x", "y", "x"], "amount": [10, 5, 7],
                       "day": pd.to_datetime(["2024-01-05", "2024-02-01", "2024-02-03"])})
    return {
        "default": df[["amount"]],
        "groupby": df.groupby("region")[["amount"]].sum(),
        "groupby2": df.groupby(["region", "product"])[["amount"]].sum(),
        "agg": df.groupby("region").agg({"amount": ["sum", "max"]}),
        "pivot": df.pivot_table(index="region", columns="product", values="amount", aggfunc="sum", fill_value=0),
        "crosstab": pd.crosstab(df["region"], df["product"]),
        "describe": df[["amount"]].describe().loc[["count", "max"]],
        "counts": df["region"].value_counts(),
        "size": df.groupby(["region", "product"]).size().rename("n"),
        "monthly": df.set_index("day")[["amount"]].resample("M").sum(),
        "monthly_series": df.set_index("day")["amount"].resample("M").sum(),
        "unnamed": pd.DataFrame({"a": [1]}, index=["r"]),
    }
`

const labelsWant = `{
 "default": [{"amount": 10}, {"amount": 5}, {"amount": 7}],
 "groupby": [{"region": "n", "amount": 17}, {"region": "s", "amount": 5}],
 "groupby2": [{"region": "n", "product": "x", "amount": 17}, {"region": "s", "product": "y", "amount": 5}],
 "agg": [{"region": "n", "amount|sum": 17, "amount|max": 10}, {"region": "s", "amount|sum": 5, "amount|max": 5}],
 "pivot": [{"region": "n", "x": 17, "y": 0}, {"region": "s", "x": 0, "y": 5}],
 "crosstab": [{"region": "n", "x": 2, "y": 0}, {"region": "s", "x": 0, "y": 1}],
 "describe": [{"index": "count", "amount": 3}, {"index": "max", "amount": 10}],
 "counts": {"n": 2, "s": 1},
 "size": [{"region": "n", "product": "x", "n": 2}, {"region": "s", "product": "y", "n": 1}],
 "monthly": [{"day": "2024-01-31T00:00:00", "amount": 10}, {"day": "2024-02-29T00:00:00", "amount": 12}],
 "monthly_series": {"2024-01-31T00:00:00": 10, "2024-02-29T00:00:00": 12},
 "unnamed": [{"index": "r", "a": 1}]
}`

// TestFramesKeepTheirLabels: a DataFrame with an index other than the
// default comes back with the index as its records' leading keys, tuple
// column names joined with "|", in JSON and in msgpack alike.
func TestFramesKeepTheirLabels(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "1")
	var want, got map[string]any
	if err := json.Unmarshal([]byte(labelsWant), &want); err != nil {
		t.Fatal(err)
	}
	s.mustSucceed(t, labelsScript, nil, &got)
	for key := range want {
		if !reflect.DeepEqual(got[key], want[key]) {
			raw, _ := json.Marshal(got[key])
			t.Errorf("%s: got %s", key, raw)
		}
	}
	status, raw := s.postMsgpack(t, map[string]any{"script": labelsScript})
	_, inPython := readStrictly(t, raw)
	// Through JSON again, so the numbers compare as the JSON answer's.
	viaPython, _ := json.Marshal(inPython["result"])
	var fromMsgpack map[string]any
	if err := json.Unmarshal(viaPython, &fromMsgpack); status != 200 || err != nil || !reflect.DeepEqual(fromMsgpack, want) {
		t.Errorf("msgpack answer (status %d): %s", status, viaPython)
	}
}
