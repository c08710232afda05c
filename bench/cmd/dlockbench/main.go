// Command dlockbench runs dlock beside the lock libraries users would pick
// instead, on real servers it starts itself, and writes a Markdown report
// with plots.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/dlock-go/dlock/bench"
)

// defaultOut is docs/bench of the repository, and its README, found from
// the bench module (the working directory) or the repository's root.
func defaultOut() (out, readme string, err error) {
	for _, root := range []string{"..", "."} {
		b, err := os.ReadFile(filepath.Join(root, "bench", "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/dlock-go/dlock/bench\n") {
			return filepath.Join(root, "docs", "bench"), filepath.Join(root, "README.md"), nil
		}
	}
	return "", "", errors.New("run from the bench directory (or the repository root), or give -out")
}

func main() {
	quick := flag.Bool("quick", false, "smoke run: every scenario with tiny counts (seconds per backend)")
	out := flag.String("out", "", "directory for RESULTS.md and the plots (default: ../docs/bench for a full run, none for -quick); a full run of every backend to the default also updates the README's summary")
	backends := flag.String("backends", "", "comma-separated backends to run (default all: "+strings.Join(bench.AllBackends, ",")+")")
	only := flag.String("only", "", "run only measurements whose name (scenario/backend/subject) matches this regexp")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()

	cfg := bench.Full()
	if *quick {
		cfg = bench.Quick()
	}
	cfg.OutDir = *out
	if cfg.OutDir == "" && !*quick {
		dir, readme, err := defaultOut()
		if err != nil {
			fmt.Fprintln(os.Stderr, "dlockbench:", err)
			os.Exit(2)
		}
		cfg.OutDir = dir
		if *backends == "" && *only == "" {
			// A whole run: the README's summary shows it.
			cfg.README = readme
		}
	}
	if *backends != "" {
		cfg.Backends = strings.Split(*backends, ",")
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dlockbench: -only:", err)
			os.Exit(2)
		}
		cfg.Only = re
	}
	cfg.Log = os.Stderr
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dlockbench:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "dlockbench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dlockbench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
	if cfg.OutDir != "" {
		fmt.Fprintf(os.Stderr, "dlockbench: wrote %s/RESULTS.md and plots in %v\n", cfg.OutDir, res.Elapsed.Round(1e9))
	}
}
