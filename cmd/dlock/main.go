// Command dlock runs a command while holding a distributed lock, shows who
// holds a lock, and demonstrates why locks matter. See docs/cli.md, or run
// "dlock help".
package main

import (
	"os"

	"github.com/dlock-go/dlock/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
