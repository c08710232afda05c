package pgdlock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

func TestOpenInvalidURL(t *testing.T) {
	// Nothing listens here; every case must fail before connecting.
	base := "postgres://u:pw@" + testserver.Addr(testserver.FreePort(t)) + "/db?sslmode=disable"
	tests := []struct {
		name, query, want string
	}{
		{"unknown parameter", "&tabel=x", "tabel"},
		{"server setting", "&search_path=x", "search_path"},
		{"repeated parameter", "&table=a&table=b", "table"},
		{"three-part table", "&table=a.b.c", "a.b.c"},
		{"table starting with a digit", "&table=1locks", "1locks"},
		{"table with a dash", "&table=my-locks", "my-locks"},
		{"quoted table", "&table=%22x%22", `x`},
		{"empty table", "&table=", "table"},
		{"long table", "&table=" + strings.Repeat("t", 64), "table"},
		{"bad boolean", "&create_table=maybe", "create_table"},
		{"bad notify", "&notify=2", "notify"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			c, err := dlock.Open(ctx, base+tc.query)
			if err == nil {
				c.Close()
				t.Fatalf("Open succeeded, want an error")
			}
			if !errors.Is(err, dlock.ErrInvalidOption) {
				t.Fatalf("Open = %v, want ErrInvalidOption", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %q", err, tc.want)
			}
			if strings.Contains(err.Error(), ":pw@") {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

func TestOpenUnreachable(t *testing.T) {
	const password = "s3cret-Passw0rd"
	// A port nobody listens on: the connection is refused.
	refused := testserver.Addr(testserver.FreePort(t))
	// A server that accepts and never answers: only the deadline ends it.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()

	for _, addr := range []string{refused, silent.Addr().String()} {
		t.Run(addr, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			c, err := dlock.Open(ctx, "postgres://dlock:"+password+"@"+addr+"/db?sslmode=disable")
			took := time.Since(start)
			if err == nil {
				c.Close()
				t.Fatal("Open of an unreachable server succeeded")
			}
			if !errors.Is(err, dlock.ErrUnavailable) {
				t.Errorf("Open = %v, want ErrUnavailable", err)
			}
			if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "postgres") {
				t.Errorf("error %q does not name postgres at %s", err, addr)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error %q contains the password", err)
			}
			if took > 5*time.Second {
				t.Errorf("Open took %v with a 500ms deadline", took)
			}
		})
	}
}

func TestOpenURL(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `CREATE SCHEMA locking`); err != nil {
		t.Fatal(err)
	}

	t.Run("wrong password", func(t *testing.T) {
		u := strings.Replace(pg.URL(), pg.Password, "wrong-Secret-1", 1)
		_, err := dlock.Open(ctx, u)
		if !errors.Is(err, dlock.ErrUnavailable) || strings.Contains(err.Error(), "wrong-Secret-1") {
			t.Fatalf("Open with a wrong password = %v, want ErrUnavailable without the password", err)
		}
	})

	t.Run("missing table without create", func(t *testing.T) {
		_, err := dlock.Open(ctx, pg.URL()+"&table=nosuch&create_table=false")
		if err == nil || errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), "nosuch") {
			t.Fatalf("Open = %v, want an error naming the missing table", err)
		}
	})

	t.Run("parameters", func(t *testing.T) {
		for _, q := range []string{
			"&table=locking.leases&application_name=dlock-test&connect_timeout=5&pool_max_conns=3",
			"&table=Mixed_Case",
			"&table=mixed_case",
			"&table=locking.leases&create_table=false",
			"&notify=false",
		} {
			for _, scheme := range []string{"postgres://", "postgresql://"} {
				u := scheme + strings.TrimPrefix(pg.URL(), "postgres://") + q
				c, err := dlock.Open(ctx, u)
				if err != nil {
					t.Fatalf("Open(%s): %v", q, err)
				}
				l, err := c.TryLock(ctx, "k"+q+scheme)
				if err != nil {
					t.Fatalf("TryLock with %s: %v", q, err)
				}
				if err := l.Unlock(ctx); err != nil {
					t.Fatal(err)
				}
				c.Close()
			}
		}
		var n int
		err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename IN ('Mixed_Case', 'mixed_case', 'leases')`).Scan(&n)
		if err != nil || n != 3 {
			t.Fatalf("tables made: %d, %v; want 3 (names are case-sensitive)", n, err)
		}
	})

	t.Run("notify parameter", func(t *testing.T) {
		for _, tc := range []struct {
			query  string
			notify bool
		}{{"", true}, {"&notify=true", true}, {"&notify=false", false}} {
			u, _ := driver.ParseURL(pg.URL() + tc.query)
			d, err := openURL(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := d.(driver.Notifier); ok != tc.notify {
				t.Errorf("%q: driver is a Notifier: %v, want %v", tc.query, ok, tc.notify)
			}
			d.Close()
		}
	})

	t.Run("concurrent create", func(t *testing.T) {
		// Many processes starting at once against a missing table.
		const n = 12
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dlock.Open(ctx, pg.URL()+"&table=locking.racing&pool_max_conns=1")
				if err != nil {
					errs <- fmt.Errorf("open %d: %w", i, err)
					return
				}
				c.Close()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}
