package core

import "sync"

// Signal is a broadcast: Wait returns a channel closed by the next Notify.
type Signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *Signal) Wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *Signal) Notify() {
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
}
