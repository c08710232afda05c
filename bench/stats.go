package bench

import (
	"slices"
	"syscall"
	"time"
)

// percentile returns the q-th quantile (0 ≤ q ≤ 1) of ds by the nearest-rank
// rule, sorting ds in place; 0 for an empty slice.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	if !slices.IsSorted(ds) {
		slices.Sort(ds)
	}
	i := int(q * float64(len(ds)))
	return ds[min(max(i, 0), len(ds)-1)]
}

// cpuTime returns the CPU time (user + system) this process has used so far.
// Servers are other processes and do not count.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
