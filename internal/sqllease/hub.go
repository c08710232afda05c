package sqllease

import "sync"

// Hub fans release notifications out to the waiters of one driver (or of
// one database file). Waiters watch a topic (a key, or a digest of it); a
// notification wakes every watcher of its topic, or one of them (One),
// with a non-blocking send into a buffer of one. The zero value is ready
// to use.
type Hub struct {
	// One makes Notify wake a single watcher of the topic, one without a
	// wake-up pending (none when all have one), and makes a watcher that
	// stops with a wake-up it did not take pass it on the same way: for
	// waiters that are all alike, of whom only one can take the key that
	// was released, so that waking all would only make the others fail.
	// Set it before the first Watch.
	One bool

	mu  sync.Mutex
	w   map[string]map[chan struct{}]struct{}
	obs map[string]map[chan struct{}]struct{} // Observe's watchers
	n   int
}

// Watch registers a watcher of topic. The returned function removes it and
// may be called more than once.
func (h *Hub) Watch(topic string) (<-chan struct{}, func()) {
	return h.register(&h.w, topic, h.One)
}

// Observe registers an observer of topic: a watcher that is woken by
// every notification of the topic, whatever One says, and that never takes
// a wake-up meant for Watch's watchers nor passes one on. The returned
// function removes it and may be called more than once.
func (h *Hub) Observe(topic string) (<-chan struct{}, func()) {
	return h.register(&h.obs, topic, false)
}

// register adds a watcher of topic to set; passOn makes one that stops
// with a wake-up it did not take wake another watcher of Watch's.
func (h *Hub) register(set *map[string]map[chan struct{}]struct{}, topic string, passOn bool) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if *set == nil {
		*set = map[string]map[chan struct{}]struct{}{}
	}
	if (*set)[topic] == nil {
		(*set)[topic] = map[chan struct{}]struct{}{}
	}
	(*set)[topic][ch] = struct{}{}
	h.n++
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete((*set)[topic], ch)
			if passOn {
				select {
				case <-ch:
					h.wakeOneLocked(topic) // a wake-up this watcher will not use
				default:
				}
			}
			if len((*set)[topic]) == 0 {
				delete(*set, topic)
			}
			h.n--
			h.mu.Unlock()
		})
	}
}

// Notify wakes the watchers of topic, or one of them (One), and its
// observers.
func (h *Hub) Notify(topic string) {
	if h.One {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.wakeOneLocked(topic)
		h.wakeObserversLocked(topic)
		return
	}
	h.NotifyEach(topic)
}

// NotifyEach wakes every watcher and observer of topic, whatever One says.
func (h *Hub) NotifyEach(topic string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.w[topic] {
		wake(ch)
	}
	h.wakeObserversLocked(topic)
}

func (h *Hub) wakeObserversLocked(topic string) {
	for ch := range h.obs[topic] {
		wake(ch)
	}
}

func (h *Hub) wakeOneLocked(topic string) {
	for ch := range h.w[topic] {
		if len(ch) == 0 {
			ch <- struct{}{} // cannot block: a buffer of one, empty, h.mu held
			return
		}
	}
}

// NotifyAll wakes every watcher and observer, e.g. after notifications
// may have been missed while a listening connection was down.
func (h *Hub) NotifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, set := range []map[string]map[chan struct{}]struct{}{h.w, h.obs} {
		for _, chs := range set {
			for ch := range chs {
				wake(ch)
			}
		}
	}
}

// Len returns the number of watchers and observers.
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
