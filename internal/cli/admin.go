package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/dlock-go/dlock"
)

const unlockUsage = `Usage: dlock unlock --force --token T KEY
       dlock unlock --force --any-owner KEY

For operators: releases the lock KEY that another process holds. With
--token T it releases only if the grant with owner token T (the holder's
DLOCK_TOKEN) holds KEY; on backends that cannot take a held lock back by its
token it exits 69. --any-owner releases whoever holds it (exit 69 until the
library offers a forced release). The holder finds out at its next refresh
and stops its command (exit 70). Every forced unlock is logged on stderr.
`

const listUsage = `Usage: dlock list [flags] [PREFIX]

Lists the held locks whose keys start with PREFIX, where the backend can
enumerate its locks; elsewhere it exits 69 ("this backend cannot list
locks").
`

// lister is what a Client offers where its backend can enumerate locks.
type lister interface {
	List(ctx context.Context, prefix string) ([]dlock.Info, error)
}

// forceUnlocker is what a Client offers where it can release a lock
// whatever its owner.
type forceUnlocker interface {
	ForceUnlock(ctx context.Context, key string) (dlock.Info, error)
}

func cmdUnlock(args []string, sio stdio) error {
	fs := newFlagSet("unlock", unlockUsage, sio)
	bf := addBackendFlags(fs)
	bf.shared = true
	force := fs.Bool("force", false, "required: release a lock another process holds")
	token := fs.String("token", "", "release only if the grant with owner token `T` holds KEY")
	anyOwner := fs.Bool("any-owner", false, "release KEY whoever holds it")
	if done, err := parseFlags(fs, args, sio); done {
		return err
	}
	switch {
	case fs.NArg() != 1:
		return usageError("unlock", "expected one KEY, got %d arguments (flags go before KEY)", fs.NArg())
	case !*force:
		return usageError("unlock", "--force is required")
	case (*token == "") == !*anyOwner:
		return usageError("unlock", "give exactly one of --token T and --any-owner")
	}
	key := fs.Arg(0)
	if err := dlock.ValidateKey(key); err != nil {
		return usageError("unlock", "%s", clean(err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *bf.timeout)
	defer cancel()
	c, shown, err := bf.open(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	before, err := c.Inspect(ctx, key)
	if err != nil {
		return backendError(context.Background(), ctx, err, fmt.Sprintf("unlock %q on %s", key, shown))
	}
	if !before.Held {
		return exitf(ExitFree, "dlock: unlock: %q is not held; nothing released", key)
	}
	if *anyOwner {
		fu, ok := any(c).(forceUnlocker)
		if !ok {
			return exitf(ExitUnavailable, "dlock: unlock --any-owner: this build cannot release a lock whatever its owner (no forced release in the library); use --token")
		}
		in, err := fu.ForceUnlock(ctx, key)
		if err != nil {
			return backendError(context.Background(), ctx, err, fmt.Sprintf("unlock %q on %s", key, shown))
		}
		fmt.Fprintf(sio.err, "dlock: forced unlock of %q on %s (any owner): removed %s\n", key, shown, describeHolder(in))
		return nil
	}
	if !c.Capabilities().ReacquireWithToken {
		return exitf(ExitUnavailable, "dlock: unlock --token: backend %s cannot take a held lock back by its token", shown)
	}
	l, err := c.TryLock(ctx, key, dlock.WithToken(*token), dlock.WithAutoRefresh(false), dlock.WithMetadata(before.Metadata))
	switch {
	case errors.Is(err, dlock.ErrNotAcquired):
		return exitf(ExitNotAcquired, "dlock: unlock: %q is held by another token (%s); nothing released", key, describeHolder(before))
	case err != nil:
		return backendError(context.Background(), ctx, err, fmt.Sprintf("unlock %q on %s", key, shown))
	}
	if l.Fence() != before.Fence && before.Fence != 0 {
		// Granted anew: the key was freed meanwhile.
		_ = l.Unlock(ctx)
		return exitf(ExitFree, "dlock: unlock: %q was released meanwhile; nothing released", key)
	}
	if err := l.Unlock(ctx); err != nil {
		return backendError(context.Background(), ctx, err, fmt.Sprintf("unlock %q on %s", key, shown))
	}
	fmt.Fprintf(sio.err, "dlock: forced unlock of %q on %s (by token): removed %s\n", key, shown, describeHolder(before))
	return nil
}

func cmdList(args []string, sio stdio) error {
	fs := newFlagSet("list", listUsage, sio)
	bf := addBackendFlags(fs)
	bf.shared = true
	if done, err := parseFlags(fs, args, sio); done {
		return err
	}
	if fs.NArg() > 1 {
		return usageError("list", "expected at most one PREFIX, got %d arguments", fs.NArg())
	}
	ctx, cancel := context.WithTimeout(context.Background(), *bf.timeout)
	defer cancel()
	c, shown, err := bf.open(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	ls, ok := any(c).(lister)
	if !ok {
		return exitf(ExitUnavailable, "dlock: list: this backend cannot list locks (%s)", shown)
	}
	infos, err := ls.List(ctx, fs.Arg(0))
	if err != nil {
		return backendError(context.Background(), ctx, err, "list on "+shown)
	}
	for _, in := range infos {
		fmt.Fprintf(sio.out, "%s\t%s\n", oneLine(in.Key), describeHolder(in))
	}
	return nil
}
