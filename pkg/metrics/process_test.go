package metrics_test

import "runtime"

// processMetrics reports whether the process collector has metrics here
// (it reads /proc on Linux; elsewhere it may have none).
func processMetrics() bool { return runtime.GOOS == "linux" }
