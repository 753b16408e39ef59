package runner

import (
	"context"
	"testing"
	"time"
)

// BenchmarkExecute measures the request path alone: one warm, idle sandbox
// executes one script (start and close are outside the timer). Modes and
// fork mode's prewarm are compared side by side.
func BenchmarkExecute(b *testing.B) {
	scripts := map[string]string{
		"hello":  "def main():\n    return {'message': 'Hello, World!'}\n",
		"pandas": "import pandas as pd, numpy as np\ndef main():\n    df = pd.DataFrame({'x': np.random.randn(50), 'y': np.random.randn(50)})\n    return float(df['x'].corr(df['y']))\n",
	}
	for _, cfg := range benchConfigs() {
		for _, name := range []string{"hello", "pandas"} {
			b.Run(cfg.name+"/"+name, func(b *testing.B) {
				r := newBenchRunnerWith(b, cfg.cfg)
				ctx := context.Background()
				b.ResetTimer()
				for range b.N {
					b.StopTimer()
					sb, err := r.Start(ctx, StartOptions{})
					if err != nil {
						b.Fatal(err)
					}
					time.Sleep(100 * time.Millisecond) // let the build's teardown work finish
					b.StartTimer()
					if _, err := sb.Execute(ctx, Request{Script: scripts[name], Timeout: 10 * time.Second}); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					sb.Close()
					b.StartTimer()
				}
			})
		}
	}
}
