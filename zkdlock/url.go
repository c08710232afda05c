package zkdlock

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock/driver"
)

// OpenURL connects to the ensemble a zk:// URL names (see the package
// documentation) with the default settings and returns the driver, which
// owns its connection and closes it on Close. It is
// (&URLOpener{}).OpenLockerURL(ctx, u).
func OpenURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	return (&URLOpener{}).OpenLockerURL(ctx, u)
}

// URLOpener opens zk:// URLs (see the package documentation for their
// parameters) with settings given in code. The zero value uses the
// defaults; init registers one for the zk scheme with dlock.Register. A
// part of the URL wins over the field it overrides; a field nothing in the
// URL overrides applies as it is.
type URLOpener struct {
	// Options are the driver's settings where the URL does not give them.
	// The URL's path, when it has one, replaces Base (zero: DefaultBase);
	// the acl parameter replaces ACL (zero: zk.WorldACL(zk.PermAll)); the
	// session_timeout parameter replaces SessionTimeout, which here is the
	// session timeout to ask for (zero: DefaultSessionTimeout): the driver
	// then uses the one the server grants, as it does for the URL's.
	Options Options
	// ConnectTimeout bounds the wait for the first session in
	// OpenLockerURL (ctx may end it sooner); the connect_timeout
	// parameter replaces it. Zero means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Dialer, when not nil, opens the connections to the servers (to
	// reach them through a proxy, say); nil means net.DialTimeout. The
	// driver reads the granted session timeout from the connections it
	// returns.
	Dialer zk.Dialer
	// ConnOptions are zk.Connect's options (zk.WithMaxBufferSize, ...),
	// passed after the driver's logger (which discards the library's log
	// lines, so a zk.WithLogger here wins) and before the driver's dialer
	// and event callback, which the driver needs and which therefore
	// always win: set Dialer to dial differently.
	ConnOptions []func(*zk.Conn)
}

var _ driver.URLOpener = (*URLOpener)(nil)

// OpenLockerURL implements driver.URLOpener: it connects to the ensemble u
// names, waits for the first session (bounded by ConnectTimeout and ctx)
// and returns the driver, which owns its connection and closes it on
// Close. Errors never show the URL's password; an invalid URL or setting
// gives an error matching dlock.ErrInvalidOption, no session in time one
// matching dlock.ErrUnavailable.
func (o *URLOpener) OpenLockerURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	d, err := o.open(ctx, u)
	return d, u.RedactError(err)
}

func (o *URLOpener) open(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	sessionTimeout := o.Options.SessionTimeout
	if sessionTimeout == 0 {
		sessionTimeout = DefaultSessionTimeout
	}
	connectTimeout := o.ConnectTimeout
	if connectTimeout == 0 {
		connectTimeout = DefaultConnectTimeout
	}
	sessionTimeout = u.Duration("session_timeout", sessionTimeout)
	connectTimeout = u.Duration("connect_timeout", connectTimeout)
	hasACL := u.Has("acl")
	aclName := u.String("acl", "")
	if err := u.Finish(); err != nil {
		return nil, err
	}
	if err := u.RequireHost("zk://[user:password@]host:port[,host:port...][/base/path]"); err != nil {
		return nil, err
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%w: zk URL must look like zk://host:port[,host:port]/base/path", driver.ErrInvalidOption)
	}
	if sessionTimeout <= 0 || connectTimeout <= 0 {
		return nil, fmt.Errorf("%w: zk URL: session_timeout and connect_timeout must be positive", driver.ErrInvalidOption)
	}
	servers, err := parseHosts(u.Host)
	if err != nil {
		return nil, err
	}
	base := o.Options.Base
	if u.Path != "" {
		base = u.Path
	}
	if base, err = cleanBase(base); err != nil {
		return nil, err
	}
	var auth []byte
	if u.User != nil {
		pw, ok := u.User.Password()
		if u.User.Username() == "" || !ok {
			return nil, fmt.Errorf("%w: zk URL: digest credentials must be user:password", driver.ErrInvalidOption)
		}
		auth = []byte(u.User.Username() + ":" + pw)
	}
	acl := o.Options.ACL
	switch {
	case !hasACL:
		if len(acl) == 0 {
			acl = zk.WorldACL(zk.PermAll)
		}
	case aclName == "world":
		acl = zk.WorldACL(zk.PermAll)
	case aclName == "creator":
		acl = zk.AuthACL(zk.PermAll)
	case aclName == "creator-read":
		acl = append(zk.AuthACL(zk.PermAll), zk.WorldACL(zk.PermRead)...)
	default:
		return nil, fmt.Errorf("%w: zk URL: acl=%q (want world, creator or creator-read)", driver.ErrInvalidOption, aclName)
	}
	if hasACL && aclName != "world" && auth == nil {
		return nil, fmt.Errorf("%w: zk URL: acl=%s needs digest credentials (zk://user:password@host/...)", driver.ErrInvalidOption, aclName)
	}
	return o.dial(ctx, servers, base, acl, auth, sessionTimeout, connectTimeout)
}

func parseHosts(host string) ([]string, error) {
	if host == "" {
		return nil, fmt.Errorf("%w: zk URL has no host", driver.ErrInvalidOption)
	}
	var out []string
	for _, h := range strings.Split(host, ",") {
		if h == "" {
			return nil, fmt.Errorf("%w: zk URL: empty host in %q", driver.ErrInvalidOption, host)
		}
		if strings.Contains(h, "/") {
			return nil, fmt.Errorf("%w: zk URL: bad host %q", driver.ErrInvalidOption, h)
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(strings.Trim(h, "[]"), "2181")
		}
		if _, port, err := net.SplitHostPort(h); err != nil || port == "" {
			return nil, fmt.Errorf("%w: zk URL: bad host %q", driver.ErrInvalidOption, h)
		}
		out = append(out, h)
	}
	return out, nil
}
