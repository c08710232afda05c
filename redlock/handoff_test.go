package redlock_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/redisengine"
	"github.com/dlock-go/dlock/internal/redisengine/redistest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestSharedHandOff: releases hand permits, readers' shares and writers'
// turns over to waiters on other clients through the nodes' release
// announcements, with or without exclusive waiters queued.
func TestSharedHandOff(t *testing.T) {
	nodes := startNodes(t, 3)
	layout, err := redisengine.New(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), redisengine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	url := testserver.RedlockURL(nodes...)
	redistest.RunSharedHandOff(t, redistest.HandOffEnv{
		Open: func(t *testing.T) *dlock.Client { return openURL(t, url) },
		Subs: func(t *testing.T, key string) int {
			// Subscribed on every node.
			least := -1
			for _, n := range nodes {
				out, err := n.Do(testCtx(t, 5*time.Second), "PUBSUB", "NUMSUB", "\xffreleased:"+key)
				if err != nil {
					t.Fatalf("PUBSUB NUMSUB: %v", err)
				}
				parts := strings.Split(out, "\n")
				c, _ := strconv.Atoi(parts[len(parts)-1])
				if least < 0 || c < least {
					least = c
				}
			}
			return least
		},
		Queued: func(t *testing.T, key string) int {
			// Queued on a majority of nodes.
			queue, _ := layout.QueueKeys(key)
			in := 0
			for _, n := range nodes {
				out, err := n.Do(testCtx(t, 5*time.Second), "ZCARD", queue)
				if err != nil {
					t.Fatalf("ZCARD: %v", err)
				}
				if c, _ := strconv.Atoi(strings.TrimSpace(out)); c > 0 {
					in++
				}
			}
			if in > len(nodes)/2 {
				return 1
			}
			return 0
		},
	})
}
