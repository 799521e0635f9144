package extsort

import "errors"

// ErrClosed is returned by Add and Each after Close.
var ErrClosed = errors.New("extsort: sorter closed")
