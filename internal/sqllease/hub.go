package sqllease

import "sync"

// Hub fans release notifications out to the waiters of one driver. Waiters
// watch a topic (a key, or a digest of it); a notification wakes every
// watcher of its topic with a non-blocking send into a buffer of one. The
// zero value is ready to use.
type Hub struct {
	mu sync.Mutex
	w  map[string]map[chan struct{}]struct{}
	n  int
}

// Watch registers a watcher of topic. The returned function removes it and
// may be called more than once.
func (h *Hub) Watch(topic string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.w == nil {
		h.w = map[string]map[chan struct{}]struct{}{}
	}
	if h.w[topic] == nil {
		h.w[topic] = map[chan struct{}]struct{}{}
	}
	h.w[topic][ch] = struct{}{}
	h.n++
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.w[topic], ch)
			if len(h.w[topic]) == 0 {
				delete(h.w, topic)
			}
			h.n--
			h.mu.Unlock()
		})
	}
}

// Notify wakes the watchers of topic.
func (h *Hub) Notify(topic string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.w[topic] {
		wake(ch)
	}
}

// NotifyAll wakes every watcher, e.g. after notifications may have been
// missed while a listening connection was down.
func (h *Hub) NotifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, chs := range h.w {
		for ch := range chs {
			wake(ch)
		}
	}
}

// Len returns the number of watchers.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
