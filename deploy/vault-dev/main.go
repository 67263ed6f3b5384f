// Command vault-dev is the real HashiCorp Vault server, built from Vault's own
// Go module so tests can run `vault server -dev` on machines that have no
// Vault package. It is a separate module so Vault's large dependency graph
// never enters fvescrow's go.mod.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
