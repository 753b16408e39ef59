package server

import (
	"fmt"
	"testing"
	"time"
)

func TestDurationBucketsReachTheLongest(t *testing.T) {
	for longest, want := range map[time.Duration]string{
		30 * time.Second:       "[0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 25 30]",
		10 * time.Second:       "[0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10]",
		7 * time.Second:        "[0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 7]",
		150 * time.Millisecond: "[0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.15]",
		10 * time.Minute:       "[0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 25 50 100 250 500 600]",
	} {
		if got := fmt.Sprint(DurationBuckets(longest)); got != want {
			t.Errorf("DurationBuckets(%v) = %s, want %s", longest, got, want)
		}
	}
}
