package testserver

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MariaDB is a MariaDB server started by StartMariaDB. It listens on
// 127.0.0.1 and on a Unix socket. The user User (password Password) has
// every privilege and the database Database exists.
type MariaDB struct {
	*Process
	// Port is the TCP port on 127.0.0.1.
	Port int
	// Socket is the Unix socket, where root connects without a password.
	Socket string
	// User, Password and Database are what URL connects with.
	User, Password, Database string
	// DataDir is the server's data directory; it survives Restart.
	DataDir string
}

// MariaDBOption configures StartMariaDB.
type MariaDBOption func(*mariaOptions)

type mariaOptions struct {
	password string
	args     []string
}

// MariaDBPassword sets the password of the test user (default: random).
func MariaDBPassword(pw string) MariaDBOption {
	return func(o *mariaOptions) { o.password = pw }
}

// MariaDBArg adds a server option, e.g. "--default-time-zone=+13:00".
func MariaDBArg(arg string) MariaDBOption {
	return func(o *mariaOptions) { o.args = append(o.args, arg) }
}

// StartMariaDB initialises a fresh data directory with mariadb-install-db
// (or mysql_install_db) and runs mariadbd (or mysqld) on a free loopback
// port until the test ends. When the test runs as root, the server runs as
// the "mysql" system user (or "nobody"). The binaries come from the Debian
// package mariadb-server; when missing the test is skipped (or fails when
// Required).
func StartMariaDB(t testing.TB, opts ...MariaDBOption) *MariaDB {
	t.Helper()
	install := lookFirst(t, "mariadb-server", "mariadb-install-db", "mysql_install_db")
	server := lookFirst(t, "mariadb-server", "mariadbd", "mysqld")
	o := mariaOptions{password: randomSecret()}
	for _, opt := range opts {
		opt(&o)
	}

	base, cred := serverDir(t, "dlock-maria-", "mysql", "nobody")
	data := filepath.Join(base, "data")
	sock := filepath.Join(base, "mysqld.sock")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, install, "--no-defaults", "--datadir="+data,
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")
	cmd.Dir = base
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", filepath.Base(install), err, out)
	}

	port := FreePort(t)
	m := &MariaDB{Port: port, Socket: sock, User: "dlock", Password: o.password, Database: "dlock", DataDir: data}
	args := append([]string{
		"--no-defaults",
		"--datadir=" + data,
		"--socket=" + sock,
		"--port=" + strconv.Itoa(port),
		"--bind-address=127.0.0.1",
		"--pid-file=" + filepath.Join(base, "mariadbd.pid"),
		"--tmpdir=" + base,
		"--skip-name-resolve",
		"--max-connections=500",
		"--innodb-buffer-pool-size=32M",
		"--innodb-flush-log-at-trx-commit=2",
		"--innodb-doublewrite=0",
	}, o.args...)
	m.Process = Start(t, Spec{
		Name:       fmt.Sprintf("mariadbd :%d", port),
		Path:       server,
		Args:       args,
		Dir:        base,
		Credential: cred,
		Ready: func(ctx context.Context) error {
			db, err := m.RootDB()
			if err != nil {
				return err
			}
			defer db.Close()
			return db.PingContext(ctx)
		},
	})

	db, err := m.RootDB()
	if err != nil {
		t.Fatalf("mariadb: %v", err)
	}
	defer db.Close()
	for _, stmt := range []string{
		"CREATE USER '" + m.User + "'@'%' IDENTIFIED BY '" + m.Password + "'",
		"GRANT ALL PRIVILEGES ON *.* TO '" + m.User + "'@'%' WITH GRANT OPTION",
		"CREATE DATABASE `" + m.Database + "`",
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("mariadb setup: %v", err)
		}
	}
	return m
}

// lookFirst finds the first of names on PATH or in /usr/sbin and /usr/bin,
// or skips (fails when Required) naming the first.
func lookFirst(t testing.TB, debPackage string, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
		for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
			p := filepath.Join(dir, n)
			if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
				return p
			}
		}
	}
	return LookPath(t, names[0], debPackage)
}

// Addr returns "127.0.0.1:port".
func (m *MariaDB) Addr() string { return Addr(m.Port) }

// URL returns a mysql:// URL for the test user and database.
func (m *MariaDB) URL() string {
	u := url.URL{
		Scheme: "mysql",
		User:   url.UserPassword(m.User, m.Password),
		Host:   m.Addr(),
		Path:   "/" + m.Database,
	}
	return u.String()
}

// Config returns a go-sql-driver configuration for the test user over TCP.
func (m *MariaDB) Config() *mysql.Config {
	c := mysql.NewConfig()
	c.User, c.Passwd = m.User, m.Password
	c.Net, c.Addr = "tcp", m.Addr()
	c.DBName = m.Database
	c.Timeout = 5 * time.Second
	return c
}

// RootDB opens a connection pool as root over the Unix socket, for
// administration (KILL, inspecting tables). The caller closes it.
func (m *MariaDB) RootDB() (*sql.DB, error) {
	c := mysql.NewConfig()
	c.User = "root"
	c.Net, c.Addr = "unix", m.Socket
	c.Timeout = 2 * time.Second
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(conn), nil
}
