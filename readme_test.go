package dlock_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	_ "github.com/dlock-go/dlock/redisdlock" // registers redis://, rediss://, ...
)

// readmeLibrary holds the README's library snippet verbatim (between the
// markers), so that it compiles and is checked by go vet and staticcheck
// with the rest of the tests. TestReadmeSnippet keeps the two equal.
func readmeLibrary(ctx context.Context) error {
	// README snippet: start
	client, err := dlock.Open(ctx, "redis://127.0.0.1:6379/0")
	if err != nil {
		return err
	}
	defer client.Close()

	// Lock, run, unlock. ctx inside is cancelled the moment the lock is lost.
	err = client.Do(ctx, "invoice/42", func(ctx context.Context) error {
		return sendInvoice(ctx, 42)
	}, dlock.WithTTL(10*time.Second))
	if err != nil {
		return err
	}

	// Or by hand:
	lock, err := client.TryLock(ctx, "nightly-report")
	switch {
	case errors.Is(err, dlock.ErrNotAcquired):
		return nil // another instance is on it
	case err != nil:
		return err
	}
	defer lock.Unlock(context.WithoutCancel(ctx))
	return writeReport(ctx, lock.Fence()) // pass the fence to the resource
	// README snippet: end
}

func sendInvoice(context.Context, int) error    { return nil }
func writeReport(context.Context, uint64) error { return nil }

var _ = readmeLibrary

// TestReadmeSnippet checks that the README's library snippet is the body
// of readmeLibrary, line for line (less one level of indentation).
func TestReadmeSnippet(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("readme_test.go")
	if err != nil {
		t.Fatal(err)
	}
	block := between(t, string(readme), "client, err := dlock.Open(ctx, \"redis://", "```", false)
	body := between(t, string(src), "\t// README snippet: start\n", "\t// README snippet: end\n", true)
	var want []string
	for _, line := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
		want = append(want, strings.TrimPrefix(line, "\t"))
	}
	if got := strings.TrimRight(block, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("README library snippet differs from readmeLibrary in readme_test.go:\n--- README\n%s\n--- readme_test.go\n%s", got, strings.Join(want, "\n"))
	}
}

// between returns the text of s from start (included unless skipStart) up
// to end.
func between(t *testing.T, s, start, end string, skipStart bool) string {
	t.Helper()
	i := strings.Index(s, start)
	if i < 0 {
		t.Fatalf("%q not found", start)
	}
	if skipStart {
		i += len(start)
	}
	j := strings.Index(s[i:], end)
	if j < 0 {
		t.Fatalf("%q not found after %q", end, start)
	}
	return s[i : i+j]
}

// TestReadmeNamesDrivers checks that the README gives the import path of
// every driver package (a directory whose code calls dlock.Register).
func TestReadmeNamesDrivers(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		files, _ := filepath.Glob(filepath.Join(e.Name(), "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), "dlock.Register(") {
				found++
				if path := "`github.com/dlock-go/dlock/" + e.Name() + "`"; !strings.Contains(string(readme), path) {
					t.Errorf("README does not name the import path %s", path)
				}
				break
			}
		}
	}
	if found < 8 {
		t.Errorf("found %d driver packages, want at least 8", found)
	}
}
