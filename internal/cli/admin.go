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
token it exits 69. --any-owner releases whoever holds it, where the backend
can (every bundled backend can). The holder finds out at its next refresh
and stops its command (exit 70). Every forced unlock is logged on stderr
with what it removed. A key that is not held: exit 3.
`

const listUsage = `Usage: dlock list [flags] [PREFIX]

Lists the held locks whose keys start with PREFIX (every held lock without
it), in key order: one line per lock, KEY, a tab, then its holder, fence and
remaining lease. With --json, one JSON object per line instead, as dlock
status --json prints. A backend that cannot enumerate its locks exits 69.
`

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
		in, err := c.ForceUnlock(ctx, key)
		switch {
		case errors.Is(err, dlock.ErrUnsupported):
			return exitf(ExitUnavailable, "dlock: unlock --any-owner: backend %s cannot release a lock whatever its owner; use --token", shown)
		case err != nil:
			return backendError(context.Background(), ctx, err, fmt.Sprintf("unlock %q on %s", key, shown))
		case !in.Held:
			return exitf(ExitFree, "dlock: unlock: %q was released meanwhile; nothing released", key)
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
	asJSON := fs.Bool("json", false, "print one JSON object per lock (key, held, fence, expires_in_ms, holder, waiters)")
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
	infos, err := c.List(ctx, fs.Arg(0))
	switch {
	case errors.Is(err, dlock.ErrUnsupported):
		return exitf(ExitUnavailable, "dlock: list: backend %s cannot list its locks", shown)
	case err != nil:
		return backendError(context.Background(), ctx, err, "list on "+shown)
	}
	for _, in := range infos {
		if *asJSON {
			b, err := statusJSON(in, nil)
			if err != nil {
				return exitf(ExitFailure, "dlock: list: %v", err)
			}
			fmt.Fprintf(sio.out, "%s\n", b)
			continue
		}
		fmt.Fprintf(sio.out, "%s\t%s\n", oneLine(in.Key), describeHolder(in))
	}
	return nil
}
