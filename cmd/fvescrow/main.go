// Command fvescrow is the FileVault and SecureToken recovery toolkit: the
// escrow server (fvescrow serve) and every admin command.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
