package l7

// FIFO pairs responses with requests in the order the requests were sent
// (HTTP/1 pipelining, Redis, PostgreSQL, MySQL). It is a bounded ring: a
// request pushed when it is full is refused, and the parser counts it as
// overflow. T is the parser's per-request state, stored by value so a warm
// connection allocates nothing.
type FIFO[T any] struct {
	buf        []T
	head, size int
}

// NewFIFO returns a FIFO that holds at most capacity requests.
func NewFIFO[T any](capacity int) *FIFO[T] {
	if capacity < 1 {
		capacity = 1
	}
	return &FIFO[T]{buf: make([]T, capacity)}
}

// Push appends a request and returns a pointer to its slot (to fill in
// place), or nil when the FIFO is full.
func (f *FIFO[T]) Push() *T {
	if f.size == len(f.buf) {
		return nil
	}
	i := (f.head + f.size) % len(f.buf)
	f.size++
	var zero T
	f.buf[i] = zero
	return &f.buf[i]
}

// Front returns the oldest request, or nil.
func (f *FIFO[T]) Front() *T {
	if f.size == 0 {
		return nil
	}
	return &f.buf[f.head]
}

// Back returns the newest request, or nil.
func (f *FIFO[T]) Back() *T {
	if f.size == 0 {
		return nil
	}
	return &f.buf[(f.head+f.size-1)%len(f.buf)]
}

// Pop removes the oldest request. The pointer Front returned stays valid
// until the next Push.
func (f *FIFO[T]) Pop() {
	if f.size == 0 {
		return
	}
	f.head = (f.head + 1) % len(f.buf)
	f.size--
}

// Len is the number of requests waiting.
func (f *FIFO[T]) Len() int { return f.size }

// Clear forgets every request (after lost records, at close).
func (f *FIFO[T]) Clear() { f.head, f.size = 0, 0 }

// ByID pairs responses with requests by an identifier the protocol carries
// (HTTP/2 stream ids, Kafka correlation ids). It is bounded: a request added
// when it is full is refused and counted by the parser as overflow.
type ByID[K comparable, T any] struct {
	m   map[K]*T
	cap int
	// free keeps released values for reuse: a warm connection allocates
	// nothing per request.
	free []*T
}

// NewByID returns a ByID that holds at most capacity requests.
func NewByID[K comparable, T any](capacity int) *ByID[K, T] {
	if capacity < 1 {
		capacity = 1
	}
	return &ByID[K, T]{m: make(map[K]*T, min(capacity, 64)), cap: capacity}
}

// Add stores a zeroed request under id and returns it, or nil when full. An
// id already present is replaced (the old request is returned to the pool
// and reported by the bool, for the parser to count).
func (b *ByID[K, T]) Add(id K) (v *T, replaced bool) {
	if old, ok := b.m[id]; ok {
		var zero T
		*old = zero
		return old, true
	}
	if len(b.m) >= b.cap {
		return nil, false
	}
	if n := len(b.free); n > 0 {
		v = b.free[n-1]
		b.free = b.free[:n-1]
		var zero T
		*v = zero
	} else {
		v = new(T)
	}
	b.m[id] = v
	return v, false
}

// Get returns the request stored under id, or nil.
func (b *ByID[K, T]) Get(id K) *T { return b.m[id] }

// Remove forgets id; the value Get returned must not be used afterwards.
func (b *ByID[K, T]) Remove(id K) {
	if v, ok := b.m[id]; ok {
		delete(b.m, id)
		b.free = append(b.free, v)
	}
}

// Len is the number of requests waiting.
func (b *ByID[K, T]) Len() int { return len(b.m) }

// Each calls fn for every waiting request (at close, to count them).
func (b *ByID[K, T]) Each(fn func(K, *T)) {
	for k, v := range b.m {
		fn(k, v)
	}
}

// Clear forgets every request.
func (b *ByID[K, T]) Clear() {
	for k, v := range b.m {
		delete(b.m, k)
		b.free = append(b.free, v)
	}
}
