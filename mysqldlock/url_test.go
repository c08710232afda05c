package mysqldlock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

func TestOpenInvalidURL(t *testing.T) {
	// Nothing listens here; every case must fail before connecting.
	addr := testserver.Addr(testserver.FreePort(t))
	tests := []struct {
		name, url, want string
	}{
		{"unknown parameter", "mysql://u:pw@" + addr + "/db?tabel=x", "tabel"},
		{"driver parameter", "mysql://u:pw@" + addr + "/db?parseTime=true", "parseTime"},
		{"repeated parameter", "mysql://u:pw@" + addr + "/db?table=a&table=b", "table"},
		{"three-part table", "mysql://u:pw@" + addr + "/db?table=a.b.c", "a.b.c"},
		{"table with a backquote", "mysql://u:pw@" + addr + "/db?table=a%60b", "table"},
		{"empty table", "mysql://u:pw@" + addr + "/db?table=", "table"},
		{"bad tls", "mysql://u:pw@" + addr + "/db?tls=maybe", "tls"},
		{"bad create_table", "mysql://u:pw@" + addr + "/db?create_table=2", "create_table"},
		{"bad timeout", "mysql://u:pw@" + addr + "/db?timeout=soon", "timeout"},
		{"no database", "mysql://u:pw@" + addr, "database"},
		{"nested path", "mysql://u:pw@" + addr + "/db/x", "database"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			c, err := dlock.Open(ctx, tc.url)
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded, want an error")
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
	refused := testserver.Addr(testserver.FreePort(t))
	// A server that accepts and never sends its greeting.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
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
			c, err := dlock.Open(ctx, "mysql://dlock:"+password+"@"+addr+"/db")
			took := time.Since(start)
			if err == nil {
				c.Close()
				t.Fatal("Open of an unreachable server succeeded")
			}
			if !errors.Is(err, dlock.ErrUnavailable) {
				t.Errorf("Open = %v, want ErrUnavailable", err)
			}
			if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "mysql") {
				t.Errorf("error %q does not name mysql at %s", err, addr)
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
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	root, err := srv.RootDB()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.ExecContext(ctx, "CREATE DATABASE locking"); err != nil {
		t.Fatal(err)
	}

	t.Run("wrong password", func(t *testing.T) {
		u := strings.Replace(srv.URL(), srv.Password, "wrong-Secret-1", 1)
		_, err := dlock.Open(ctx, u)
		if !errors.Is(err, dlock.ErrUnavailable) || strings.Contains(err.Error(), "wrong-Secret-1") || !strings.Contains(err.Error(), srv.Addr()) {
			t.Fatalf("Open with a wrong password = %v, want ErrUnavailable naming %s, without the password", err, srv.Addr())
		}
	})

	t.Run("missing table without create", func(t *testing.T) {
		_, err := dlock.Open(ctx, srv.URL()+"?table=nosuch&create_table=false")
		if err == nil || errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), "nosuch") {
			t.Fatalf("Open = %v, want an error naming the missing table", err)
		}
	})

	t.Run("parameters", func(t *testing.T) {
		for _, q := range []string{
			"?table=locking.leases&timeout=5s",
			"?table=locking.leases&create_table=false",
			"?tls=preferred",
			"?tls=false&timeout=3",
			"?table=other_locks",
		} {
			c, err := dlock.Open(ctx, srv.URL()+q)
			if err != nil {
				t.Fatalf("Open(%s): %v", q, err)
			}
			l, err := c.TryLock(ctx, "k"+q)
			if err != nil {
				t.Fatalf("TryLock with %s: %v", q, err)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
		var n int
		err := root.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables
			WHERE (table_schema, table_name) IN (('locking', 'leases'), ('dlock', 'other_locks'))`).Scan(&n)
		if err != nil || n != 2 {
			t.Fatalf("tables made: %d, %v; want 2", n, err)
		}
	})

	t.Run("tls=true without server TLS", func(t *testing.T) {
		_, err := dlock.Open(ctx, srv.URL()+"?tls=true")
		if !errors.Is(err, dlock.ErrUnavailable) {
			t.Fatalf("Open with tls=true against a plain-text server = %v, want ErrUnavailable", err)
		}
	})

	t.Run("concurrent create", func(t *testing.T) {
		const n = 12
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dlock.Open(ctx, srv.URL()+"?table=locking.racing")
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

	t.Run("is a notifier", func(t *testing.T) {
		u, _ := driver.ParseURL(srv.URL())
		d, err := openURL(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if _, ok := d.(driver.Notifier); !ok {
			t.Error("driver is not a Notifier")
		}
	})
}
