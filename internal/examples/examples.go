// Package examples holds the original service's README example scripts,
// verbatim, for the tests and the benchmark harness that must run exactly
// what the original service's users ran.
package examples

// Hello is the original README's "Basic Hello World".
const Hello = "def main():\n    return {\"message\": \"Hello, World!\"}\n"

// Numpy is the original README's "Data Processing with NumPy".
const Numpy = `import numpy as np

def main():
    data = np.random.randn(100)
    return {
        "mean": float(np.mean(data)),
        "std": float(np.std(data)),
        "min": float(np.min(data)),
        "max": float(np.max(data))
    }
`

// Pandas is the original README's "Data Analysis with Pandas".
const Pandas = `import pandas as pd
import numpy as np

def main():
    # Create sample data
    df = pd.DataFrame({
        'x': np.random.randn(50),
        'y': np.random.randn(50)
    })

    # Calculate statistics
    stats = {
        'count': len(df),
        'correlation': float(df['x'].corr(df['y'])),
        'x_mean': float(df['x'].mean()),
        'y_mean': float(df['y'].mean())
    }

    return stats
`
