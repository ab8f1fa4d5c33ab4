// The Go debuggee of `lab.sh realdebug`: a loop that calls tick() every
// 200 ms, built without optimisations (-gcflags=all=-N -l) so a debugger can
// break in tick and read counter.
package main

import (
	"fmt"
	"time"
)

var counter int

//go:noinline
func tick() int {
	counter++
	return counter
}

func main() {
	fmt.Println("go debuggee running")
	for {
		tick()
		time.Sleep(200 * time.Millisecond)
	}
}
