// Command gohello links no crypto/tls: discovery must find nothing in it.
package main

import "fmt"

func main() { fmt.Println("hello") }
