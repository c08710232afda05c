package redistest

import "github.com/dlock-go/dlock/drivertest"

// Secret is the password that the URLs of InvalidURLs carry: no error may
// show it (drivertest.URLCases.Secret).
const Secret = "pa55word-in-url"

// InvalidURLs returns, for drivertest.URLCases.Invalid, the URLs that
// every scheme of the Redis family refuses before connecting, each with
// what its error must name: the parts that redisengine.ReadURL, HostList
// and ParseDB read, tried on scheme (one without TLS, whose URLs name one
// host and a database number as their path, like redis and redlock) and
// tlsScheme (its TLS form), and a URL without its "//" or without a host
// for scheme, tlsScheme and each of others. Those errors name the scheme,
// which only its registered opener does, so they also show that each
// scheme is registered.
func InvalidURLs(scheme, tlsScheme string, others ...string) []drivertest.InvalidURL {
	const host = "127.0.0.1:1"
	plain, secure := scheme+"://"+host, tlsScheme+"://"+host
	cases := []drivertest.InvalidURL{
		{URL: scheme + "://:" + Secret + "@" + host + "?bogus=1", Want: "unknown parameter(s) bogus"},
		{URL: plain + "?prefix=a&prefix=b", Want: `"prefix" given 2 times`},
		{URL: plain + "?dial_timeout=soon", Want: "dial_timeout"},
		{URL: plain + "?read_timeout=0", Want: "read_timeout"},
		{URL: plain + "?write_timeout=-1s", Want: "write_timeout"},
		{URL: plain + "?pool_size=0", Want: "pool_size"},
		{URL: plain + "?pool_size=many", Want: "pool_size"},
		{URL: plain + "?fence_ttl=1ms", Want: "fence TTL"},
		{URL: plain + "?prefix=%7B", Want: `prefix "{"`},
		{URL: plain + "?prefix=%7B%7D", Want: `prefix "{}"`},
		{URL: plain + "?prefix=%FF", Want: "prefix is not valid UTF-8"},
		{URL: plain + "/x", Want: "database number"},
		{URL: plain + "/-1", Want: "database number"},
		{URL: plain + "/1/2", Want: "database number"},
		{URL: scheme + "://:" + Secret + "@" + host + "/nodb", Want: "database number"},
		{URL: scheme + "://127.0.0.1:99999", Want: `port "99999"`},
		{URL: plain + ",,127.0.0.1:2", Want: "empty host"},
		{URL: scheme + "://%2Ftmp%2Fredis.sock/0", Want: `host "/tmp/redis.sock" is not valid`},
		{URL: plain + "?tls_ca_file=/x", Want: "tls_ca_file"},
		{URL: plain + "?tls_insecure_skip_verify=true", Want: "tls_insecure_skip_verify"},
		{URL: plain + "?sentinel_password=x", Want: "sentinel_password"},
		{URL: secure + "?tls_ca_file=/does/not/exist", Want: "tls_ca_file"},
		{URL: secure + "?tls_cert_file=/x", Want: "tls_key_file"},
		{URL: secure + "?tls_insecure_skip_verify=maybe", Want: "tls_insecure_skip_verify"},
	}
	for _, s := range append([]string{scheme, tlsScheme}, others...) {
		noSlashes, noHost := s+` URL is missing the "//"`, s+" URL names no host"
		cases = append(cases,
			drivertest.InvalidURL{URL: s + ":" + host, Want: noSlashes},
			drivertest.InvalidURL{URL: s + ":app:" + Secret + "@" + host + "/0", Want: noSlashes},
			drivertest.InvalidURL{URL: s + ":/app:" + Secret + "@" + host + "/0", Want: noSlashes},
			drivertest.InvalidURL{URL: s + "://", Want: noHost},
			drivertest.InvalidURL{URL: s + ":///0", Want: noHost},
			drivertest.InvalidURL{URL: s + "://:" + Secret + "@/0", Want: noHost},
		)
	}
	return cases
}
