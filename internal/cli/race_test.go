//go:build race

package cli

// raceEnabled makes TestMain build the dlock binary with the race detector
// too, so the processes the tests start are checked as well.
const raceEnabled = true
