package runner

import (
	"context"
	"testing"
	"time"
)

// BenchmarkExecute measures the request path alone: one warm, idle sandbox
// executes one script (start and close are outside the timer). Modes,
// fork mode's prewarm and a preloaded matplotlib are compared side by side.
func BenchmarkExecute(b *testing.B) {
	scripts := map[string]string{
		"hello":  "def main():\n    return {'message': 'Hello, World!'}\n",
		"pandas": "import pandas as pd, numpy as np\ndef main():\n    df = pd.DataFrame({'x': np.random.randn(50), 'y': np.random.randn(50)})\n    return float(df['x'].corr(df['y']))\n",
		// README's plot example: a bar chart of a DataFrame, as PNG.
		"plot": "import base64, io\nimport matplotlib.pyplot as plt\nimport pandas as pd\ndef main():\n" +
			"    df = pd.DataFrame({'month': ['Jan', 'Feb', 'Mar', 'Apr'], 'sales': [120, 135, 160, 150]})\n" +
			"    ax = df.plot(x='month', y='sales', kind='bar', title='Sales by month', legend=False)\n" +
			"    buf = io.BytesIO()\n    ax.figure.savefig(buf, format='png', dpi=100)\n    plt.close('all')\n" +
			"    return base64.b64encode(buf.getvalue()).decode()\n",
	}
	for _, cfg := range benchConfigs() {
		for _, name := range []string{"hello", "pandas", "plot"} {
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
