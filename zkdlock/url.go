package zkdlock

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock/driver"
)

func openURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	sessionTimeout := u.Duration("session_timeout", DefaultSessionTimeout)
	connectTimeout := u.Duration("connect_timeout", DefaultConnectTimeout)
	aclName := u.String("acl", "world")
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
	base, err := cleanBase(u.Path)
	if err != nil {
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
	var acl []zk.ACL
	switch aclName {
	case "world":
		acl = zk.WorldACL(zk.PermAll)
	case "creator":
		acl = zk.AuthACL(zk.PermAll)
	case "creator-read":
		acl = append(zk.AuthACL(zk.PermAll), zk.WorldACL(zk.PermRead)...)
	default:
		return nil, fmt.Errorf("%w: zk URL: acl=%q (want world, creator or creator-read)", driver.ErrInvalidOption, aclName)
	}
	if aclName != "world" && auth == nil {
		return nil, fmt.Errorf("%w: zk URL: acl=%s needs digest credentials (zk://user:password@host/...)", driver.ErrInvalidOption, aclName)
	}
	return dial(ctx, servers, base, acl, auth, sessionTimeout, connectTimeout)
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
