package gateway

import (
	"testing"
	"unsafe"
)

// Built under -race too, unlike alloc_test.go: a size does not change
// with the race detector, and .ci/run's pass without it runs only the
// Allocations tests.

// TestExchangeSizeClass: every request allocates one exchange, which
// holds pointers and is over 512 bytes, so the runtime adds an 8-byte
// header; with it, it must stay within the 1152-byte size class it has
// been in. A held answer's count and holder in it (24 bytes) took it to
// 1280 bytes, 128 more per request.
func TestExchangeSizeClass(t *testing.T) {
	if size := unsafe.Sizeof(exchange{}) + 8; size > 1152 {
		t.Errorf("exchange with its malloc header = %d bytes, over the 1152-byte size class: move what most requests leave unset behind a pointer", size)
	}
}
