package sqllease

import "sync"

// Tokens is a set of (key, token) pairs, safe for concurrent use; the zero
// value is empty. A driver keeps in it the tokens it recorded as waiting
// writers, so that only their next exclusive attempt pays for removing the
// record, and a plain mutex's attempts stay one statement.
type Tokens struct {
	mu sync.Mutex
	m  map[[2]string]struct{}
}

// Add puts (key, token) in the set.
func (t *Tokens) Add(key, token string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[[2]string]struct{}{}
	}
	t.m[[2]string{key, token}] = struct{}{}
}

// Has reports whether (key, token) is in the set.
func (t *Tokens) Has(key, token string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.m[[2]string{key, token}]
	return ok
}

// Remove takes (key, token) out of the set.
func (t *Tokens) Remove(key, token string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, [2]string{key, token})
}
