package httpapi

import (
	"sync"
	"time"
)

// forwardWarnEvery is how often at most a failed forward to one owner is
// logged (at Warn): an owner that is down or hung fails every request sent
// to it, and a line each would drown the log.
const forwardWarnEvery = 5 * time.Second

// warnLimiter lets through at most one warning per key (an owner's
// address) per interval, and counts those it holds back. Its zero value
// (with every set) is ready; it is safe for concurrent use.
type warnLimiter struct {
	every time.Duration

	mu   sync.Mutex
	keys map[string]*warnWindow
}

type warnWindow struct {
	at         time.Time // the last warning let through
	suppressed int       // warnings held back since
}

// maxWarnKeys bounds the keys a warnLimiter remembers: past it, those whose
// interval has run out are forgotten (their held-back count with them).
const maxWarnKeys = 256

// allow says whether a warning for key may be logged at now and, if so,
// how many for key were held back since the last one let through (to log
// with it).
func (l *warnLimiter) allow(key string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.keys[key]
	switch {
	case w != nil && now.Sub(w.at) < l.every:
		w.suppressed++
		return false, 0
	case w == nil:
		if l.keys == nil {
			l.keys = map[string]*warnWindow{}
		}
		if len(l.keys) >= maxWarnKeys {
			for k, old := range l.keys {
				if now.Sub(old.at) >= l.every {
					delete(l.keys, k)
				}
			}
		}
		w = &warnWindow{}
		l.keys[key] = w
	}
	suppressed = w.suppressed
	w.at, w.suppressed = now, 0
	return true, suppressed
}
